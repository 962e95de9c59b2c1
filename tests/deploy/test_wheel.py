"""The built wheel installs and runs on its own: built from a copy of the image's build context, installed
into a clean virtualenv (the hashed lock, then the wheel with --no-deps, as the Dockerfile does) and run
from a directory outside the checkout with no INVENTORY_TOPICS_FILE / INVENTORY_SCHEMAS_DIR: it finds
topics.yaml and schemas/ in its own package data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.deploy.support import ROOT
from tests.support.fleet import free_port, wait_until

# What the Dockerfile's build stage copies: the package and what its symlinks point at.
BUILD_CONTEXT = ("pyproject.toml", "README.md", "topics.yaml", "schemas", "agents")
UV = Path(sys.executable).parent / "uv"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


@dataclass(frozen=True)
class Install:
    venv: Path
    wheel: Path
    outside: Path  # the working directory of every command: not the checkout, not the venv

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    def env(self, **extra: str) -> dict[str, str]:
        # No INVENTORY_* setting, no PYTHONPATH and no coverage hook leaks in from the test run.
        keep = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("INVENTORY_", "PYTHON", "COVERAGE", "VIRTUAL_ENV", "PIP_"))
        }
        return {**keep, "PATH": f"{self.venv / 'bin'}:{os.environ['PATH']}", **extra}

    def run(self, *argv: str, timeout: float = 60, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv), cwd=self.outside, env=self.env(**extra), capture_output=True, text=True, timeout=timeout
        )


def uv(*args: str, cwd: Path) -> None:
    """uv (pinned in the dev extras): the same lock and hashes as the image's pip, a clean venv in a tenth of the
    time (pip took 70 s here to install the lock; uv takes 3 s from its cache)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV", "UV_"))}
    subprocess.run([str(UV), *args, "--quiet"], cwd=cwd, check=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Install:
    base = tmp_path_factory.mktemp("wheel")
    assert not base.resolve().is_relative_to(ROOT), "the test must build and run outside the checkout"
    source, dist, venv, outside = base / "src", base / "dist", base / "venv", base / "elsewhere"
    source.mkdir()
    outside.mkdir()
    for name in BUILD_CONTEXT:
        path = ROOT / name
        if path.is_dir():
            # symlinks=True: agents/topics.yaml and agents/schemas stay links, as COPY leaves them.
            shutil.copytree(path, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    uv("build", "--wheel", "--out-dir", str(dist), str(source), cwd=base)
    (wheel,) = dist.glob("inventory_fleet-*.whl")
    uv("venv", "--python", sys.executable, str(venv), cwd=base)
    python = str(venv / "bin" / "python")
    uv("pip", "install", "--python", python, "--require-hashes", "-r", str(ROOT / "requirements.lock"), cwd=outside)
    uv("pip", "install", "--python", python, "--no-deps", str(wheel), cwd=outside)
    return Install(venv, wheel, outside)


def test_the_wheel_carries_topics_yaml_and_every_schema(installed: Install) -> None:
    import zipfile

    names = set(zipfile.ZipFile(installed.wheel).namelist())
    expected = {"agents/topics.yaml", "agents/openapi.json", "agents/schemas/local-registry.yaml"}
    expected |= {f"agents/schemas/{path.name}" for path in (ROOT / "schemas").glob("*.avsc")}
    assert len(expected) > 10
    assert expected <= names, sorted(expected - names)
    # The files themselves, not links: the same bytes as the repository's.
    with zipfile.ZipFile(installed.wheel) as wheel:
        assert wheel.read("agents/topics.yaml") == (ROOT / "topics.yaml").read_bytes()


def test_version(installed: Install) -> None:
    result = installed.run("inventory-fleet", "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == VERSION


def test_the_package_and_its_data_come_from_the_venv(installed: Install) -> None:
    probe = """
import json
from importlib.resources import files
import agents
from agents.settings import Settings
data = files("agents")
settings = Settings()
print(json.dumps({
    "package": agents.__file__,
    "topics_yaml": data.joinpath("topics.yaml").is_file(),
    "schemas": sorted(entry.name for entry in data.joinpath("schemas").iterdir()),
    "topics_file": str(settings.topics_file),
    "schemas_dir": str(settings.schemas_dir),
}))
"""
    result = installed.run(installed.python, "-c", probe)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    site = (installed.venv / "lib").resolve()
    assert Path(found["package"]).resolve().is_relative_to(site), found["package"]
    assert found["topics_yaml"] is True
    assert found["schemas"] == sorted(path.name for path in (ROOT / "schemas").iterdir())
    topics_file, schemas_dir = Path(found["topics_file"]), Path(found["schemas_dir"])
    assert topics_file.resolve().is_relative_to(site) and topics_file.is_file(), topics_file
    assert schemas_dir.resolve().is_relative_to(site) and (schemas_dir / "local-registry.yaml").is_file()


def test_topics_check_from_the_installed_package(installed: Install) -> None:
    topics = len(yaml.safe_load((ROOT / "topics.yaml").read_text())["topics"])
    result = installed.run(installed.python, "-m", "agents", "topics", "check")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"topics.yaml agrees with schemas/ ({topics} topics)"
    result = installed.run("inventory-fleet", "topics", "check", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"ok": True, "topics": topics, "problems": []}


def test_the_environment_still_overrides_the_package_data(installed: Install, tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    shutil.copy(ROOT / "schemas" / "local-registry.yaml", tmp_path / "schemas")  # no .avsc: check must fail
    result = installed.run(
        installed.python, "-m", "agents", "topics", "check", "--json", INVENTORY_SCHEMAS_DIR=str(tmp_path / "schemas")
    )
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["problems"]
    missing = tmp_path / "missing.yaml"
    result = installed.run(installed.python, "-m", "agents", "topics", "check", INVENTORY_TOPICS_FILE=str(missing))
    assert result.returncode != 0
    assert str(missing) in result.stderr


@pytest.mark.broker
def test_a_worker_starts_from_the_wheel(installed: Install, bootstrap: str, tmp_path: Path) -> None:
    """The worker applies the packaged topics.yaml and reads the packaged schemas, then serves /readyz. Its
    own consumer group; the topics are the contract's own names, which the other broker tests never use
    (they rename theirs per test)."""
    port = free_port()
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [installed.python, "-m", "agents", "worker"],
            cwd=installed.outside,
            env=installed.env(
                INVENTORY_KAFKA_BOOTSTRAP=bootstrap,
                INVENTORY_APP_ID=f"wheel-test-{port}",
                INVENTORY_DATA_DIR=str(tmp_path / "data"),
                INVENTORY_WEB_PORT=str(port),
                PYTHONUNBUFFERED="1",
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def ready() -> bool:
        assert process.poll() is None, f"the worker exited ({process.returncode}):\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    try:
        wait_until(ready, 90, "the wheel's worker to be ready", interval=0.25)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
