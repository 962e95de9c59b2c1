"""requirements.lock and requirements-dev.lock (`make lock`) agree with pyproject.toml: every dependency
pyproject.toml pins is in the lock at that version, and every locked package carries its hashes (the image
installs the lock with pip --require-hashes)."""

from __future__ import annotations

import re
import tomllib
from functools import cache
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.support import ROOT

RUNTIME_LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"
LOCKED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def pyproject() -> dict[str, list[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {"runtime": project["dependencies"], **project["optional-dependencies"]}


def pins(requirements: list[str]) -> dict[str, str]:
    """Canonical name -> the exact version pyproject.toml gives it."""
    pinned = {}
    for text in requirements:
        requirement = Requirement(text)
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", f"{text}: not pinned exactly"
        pinned[canonicalize_name(requirement.name)] = specifiers[0].version
    return pinned


@cache
def locked(path: Path) -> dict[str, set[str]]:
    """Canonical name -> the versions the lock file holds (two where a marker splits one, e.g. by Python)."""
    versions: dict[str, set[str]] = {}
    for line in path.read_text().splitlines():
        match = LOCKED.match(line)
        if match:
            versions.setdefault(canonicalize_name(match.group(1)), set()).add(match.group(2))
    return versions


def entries(path: Path) -> list[list[str]]:
    """Each requirement of the lock file: its line and the continuation lines that follow it."""
    blocks: list[list[str]] = []
    for line in path.read_text().splitlines():
        if LOCKED.match(line):
            blocks.append([line])
        elif blocks and line.startswith(" ") and not line.strip().startswith("#"):
            blocks[-1].append(line)
    return blocks


@pytest.mark.parametrize(
    ("lock", "groups"),
    [(RUNTIME_LOCK, ["runtime"]), (DEV_LOCK, ["runtime", "dev"])],
    ids=["requirements.lock", "requirements-dev.lock"],
)
def test_every_pin_of_pyproject_is_locked_at_its_version(lock: Path, groups: list[str]) -> None:
    in_lock = locked(lock)
    for group in groups:
        for name, version in pins(pyproject()[group]).items():
            assert name in in_lock, f"{lock.name} lacks {name}=={version} ([{group}]): run make lock"
            assert in_lock[name] == {version}, f"{lock.name}: {name} {sorted(in_lock[name])}, pyproject.toml {version}"


def test_the_dev_lock_agrees_with_the_runtime_lock() -> None:
    """requirements-dev.lock is compiled under requirements.lock: a package both hold is at one version."""
    runtime, dev = locked(RUNTIME_LOCK), locked(DEV_LOCK)
    assert set(runtime) <= set(dev), sorted(set(runtime) - set(dev))
    for name, versions in runtime.items():
        assert dev[name] == versions, f"{name}: {sorted(versions)} in requirements.lock, {sorted(dev[name])} in dev"


@pytest.mark.parametrize("lock", [RUNTIME_LOCK, DEV_LOCK], ids=lambda path: path.name)
def test_every_locked_package_has_hashes(lock: Path) -> None:
    blocks = entries(lock)
    assert len(blocks) >= len(pins(pyproject()["runtime"]))
    for block in blocks:
        hashes = [line.strip() for line in block[1:] if line.strip().startswith("--hash=sha256:")]
        assert hashes, f"{block[0]}: no --hash"
        assert all(re.fullmatch(r"--hash=sha256:[0-9a-f]{64}( \\)?", line) for line in hashes), block[0]


def test_make_lock_regenerates_both_with_hashes() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^lock:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe, "Makefile has no lock target"
    assert "-o requirements.lock" in recipe.group(1) and "-o requirements-dev.lock" in recipe.group(1)
    assert "--generate-hashes" in makefile
    for lock in (RUNTIME_LOCK, DEV_LOCK):
        assert "make lock" in lock.read_text().splitlines()[1], f"{lock.name}: not written by make lock"
    # The tool that writes the locks is itself pinned in the dev extras.
    assert "uv" in pins(pyproject()["dev"])
