"""The promtool of the Prometheus that docker-compose.yml runs, for the deployment tests.

docker-compose.yml pins `prom/prometheus:vX.Y.Z`; the rules, configs, dashboard queries and a worker's
/metrics are checked with promtool X.Y.Z, not whatever promtool the machine has (Debian's is 2.42, and
built without Kubernetes discovery). `promtool()` returns, in this order:

1. `$INVENTORY_PROMTOOL`, if set (it must be that version: checked, never trusted);
2. the cached build, `<tools dir>/promtool-X.Y.Z/promtool`;
3. `promtool` on PATH, if its `--version` is X.Y.Z;
4. else it builds promtool X.Y.Z with `go` from the Go module proxy: Prometheus X.Y.Z is the Go module
   github.com/prometheus/prometheus at v0.(100*X+Y).Z; `go mod download` fetches it and `go build` builds
   ./cmd/promtool inside it (as the main module, so the module's own replace directives hold; `go install
   pkg@version` refuses a module that has any), with the version stamped as Prometheus' release does. The
   binary goes to the cache. A first build takes a few minutes on 2 cores (the Go build cache makes a
   rebuild a link of a few seconds).

The tools dir is `$INVENTORY_TOOLS_DIR`, else `.tools/` at the repository's root (git-ignored). A
promtool that cannot be had, or that is not the compose image's version, fails with what to do.

`python tests/support/promtool.py` (standard library only, so .ci/run can run it before the virtualenv
exists) finds or builds it and prints its path.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
MODULE = "github.com/prometheus/prometheus"
BUILD_TIMEOUT_S = 1800


class PromtoolUnavailable(RuntimeError):
    pass


def compose_prometheus_version(compose_file: Path = COMPOSE_FILE) -> str:
    """X.Y.Z of the `prom/prometheus:vX.Y.Z` image docker-compose.yml runs."""
    tags = re.findall(r"^\s*image:\s*[\"']?prom/prometheus:v?(\d+\.\d+\.\d+)[\"']?\s*$", compose_file.read_text(), re.M)
    if len(tags) != 1:
        raise PromtoolUnavailable(f"{compose_file}: expected one prom/prometheus:vX.Y.Z image, found {tags}")
    return tags[0]


def module_version(version: str) -> str:
    """The Go module version of Prometheus `version`: 3.5.0 -> v0.305.0."""
    major, minor, patch = (int(part) for part in version.split("."))
    return f"v0.{major * 100 + minor}.{patch}"


def version_of(path: str | Path) -> str | None:
    """X.Y.Z from `promtool --version` ("promtool, version 3.5.0 (branch: ...)"), None if it does not run."""
    try:
        result = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return None
    match = re.search(r"promtool, version (\d+\.\d+\.\d+)", result.stdout + result.stderr)
    return match.group(1) if match else None


def tools_dir() -> Path:
    return Path(os.environ.get("INVENTORY_TOOLS_DIR") or ROOT / ".tools")


def _go() -> str:
    go = shutil.which("go") or next(
        (p for p in ("/usr/local/go/bin/go", "/usr/lib/go/bin/go") if Path(p).exists()), None
    )
    if go is None:
        raise PromtoolUnavailable(
            "no promtool of the compose image's version, and no `go` to build it: install Go (the machine image "
            "has it at /usr/local/go/bin; else `apt-get install golang-go`), or set INVENTORY_PROMTOOL"
        )
    return go


def build(version: str, target: Path) -> Path:
    """Build promtool `version` from the Go module proxy into target (a file path); return it."""
    go = _go()
    module = f"{MODULE}@{module_version(version)}"
    env = {**os.environ, "GOFLAGS": "-mod=readonly"}
    downloaded = subprocess.run(
        [go, "mod", "download", "-json", module], capture_output=True, text=True, env=env, timeout=600, check=False
    )
    if downloaded.returncode != 0:
        raise PromtoolUnavailable(f"`go mod download {module}` failed:\n{downloaded.stdout}\n{downloaded.stderr}")
    source = Path(json.loads(downloaded.stdout)["Dir"])
    stamp = "github.com/prometheus/common/version"
    ldflags = f"-s -w -X {stamp}.Version={version} -X {stamp}.Branch=HEAD -X {stamp}.BuildUser=inventory-fleet-tests"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    built = subprocess.run(
        [go, "build", "-ldflags", ldflags, "-o", str(partial), "./cmd/promtool"],
        cwd=source,
        capture_output=True,
        text=True,
        env=env,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    if built.returncode != 0:
        raise PromtoolUnavailable(f"building promtool {version} from {module} failed:\n{built.stderr[-4000:]}")
    partial.replace(target)
    return target


@cache
def promtool() -> str:
    """The path of a promtool whose version is the compose image's (found, cached or built)."""
    version = compose_prometheus_version()
    given = os.environ.get("INVENTORY_PROMTOOL")
    if given:
        if version_of(given) != version:
            raise PromtoolUnavailable(
                f"INVENTORY_PROMTOOL={given} is promtool {version_of(given)}; docker-compose.yml runs Prometheus "
                f"{version}"
            )
        return given
    cached = tools_dir() / f"promtool-{version}" / "promtool"
    if cached.exists() and version_of(cached) == version:
        return str(cached)
    on_path = shutil.which("promtool")
    if on_path and version_of(on_path) == version:
        return on_path
    cached.parent.mkdir(parents=True, exist_ok=True)
    with (cached.parent / ".lock").open("w") as lock:  # one build at a time, whoever asks
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (cached.exists() and version_of(cached) == version):
            build(version, cached)
    got = version_of(cached)
    if got != version:
        raise PromtoolUnavailable(f"the promtool built at {cached} says version {got}, not {version}")
    return str(cached)


if __name__ == "__main__":
    try:
        print(promtool())
    except PromtoolUnavailable as exc:
        print(f"promtool: {exc}", file=sys.stderr)
        sys.exit(1)
