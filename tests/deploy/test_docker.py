"""Dockerfile and .dockerignore: a python:3.11-slim image, non-root, running the worker; its dependencies
installed from the hashed lock, then the package (which carries topics.yaml and schemas/) without dependencies."""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
from pathlib import PurePosixPath

from tests.deploy.support import DOCKERFILE, ROOT, WORKER_COMMAND, dockerfile_instructions, settings_env_names


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


def build_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[:last_from]


def pip_installs(stage: list[tuple[str, str]]) -> list[tuple[int, list[str]]]:
    """(position in the stage, arguments after `pip install`) of every RUN that calls pip install."""
    found = []
    for i, (op, args) in enumerate(stage):
        if op != "RUN":
            continue
        words = shlex.split(args)
        for j in range(len(words) - 1):
            if words[j].endswith("pip") and words[j + 1] == "install":
                found.append((i, words[j + 2 :]))
    return found


def copied_into(stage: list[tuple[str, str]]) -> dict[str, tuple[int, PurePosixPath]]:
    """Build-context path -> (position of its COPY in the stage, where it lands in the image)."""
    copied: dict[str, tuple[int, PurePosixPath]] = {}
    workdir = PurePosixPath("/")
    for i, (op, args) in enumerate(stage):
        if op == "WORKDIR":
            workdir = workdir / args
        if op == "COPY" and not args.startswith("--from"):
            *sources, target = args.split()
            for source in sources:
                destination = workdir / target
                if target.endswith("/") or len(sources) > 1:
                    destination = destination / PurePosixPath(source).name
                copied[source.rstrip("/")] = (i, PurePosixPath(os.path.normpath(destination)))
    return copied


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for op, args in stage:
        if op == "ENV":
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str) -> bool:
    return any(fnmatch.fnmatch(path, pattern.lstrip("/")) for pattern in dockerignore_patterns())


def test_base_image_user_and_command() -> None:
    stage = final_stage()
    assert stage[0][1].split()[0] == "python:3.11-slim"
    for op, args in dockerfile_instructions():
        if op == "FROM":
            assert args.split()[0].startswith("python:3.11-slim")
    users = [args for op, args in stage if op == "USER"]
    assert users, "the image switches to a non-root user"
    assert users[-1].split(":")[0] not in {"root", "0"}
    cmds = [args for op, args in stage if op == "CMD"]
    assert json.loads(cmds[-1]) == WORKER_COMMAND


def test_env_names_are_settings() -> None:
    env = env_of(final_stage())
    names = {k for k in env if k.startswith("INVENTORY_")}
    assert names <= settings_env_names(), sorted(names - settings_env_names())
    assert env["INVENTORY_WEB_HOST"] == "0.0.0.0"
    assert env["INVENTORY_DATA_DIR"] == "/data"
    # The installed package carries topics.yaml and schemas/ (package data); Settings finds them there.
    assert "INVENTORY_TOPICS_FILE" not in env
    assert "INVENTORY_SCHEMAS_DIR" not in env


def test_final_stage_takes_only_the_built_virtualenv() -> None:
    copies = [args for op, args in final_stage() if op in {"COPY", "ADD"}]
    assert copies == ["--from=build /opt/venv /opt/venv"], copies


def test_dependencies_come_from_the_hashed_lock_then_the_package_without_dependencies() -> None:
    stage = build_stage()
    installs = pip_installs(stage)
    assert len(installs) == 2, installs
    (lock_at, lock_args), (package_at, package_args) = installs
    assert "--require-hashes" in lock_args
    assert lock_args[lock_args.index("-r") + 1] == "requirements.lock"
    assert package_args == ["--no-deps", "."], package_args
    at = {source: position for source, (position, _) in copied_into(stage).items()}
    assert at["requirements.lock"] < lock_at
    # The dependency layer comes before the source, so editing agents/ does not reinstall the dependencies.
    assert lock_at < at["agents"] < package_at
    for name in ("pyproject.toml", "README.md", "topics.yaml", "schemas"):
        assert at[name] < package_at, f"{name} is copied after the package is installed"


def test_the_build_stage_has_what_the_packages_symlinks_point_at() -> None:
    """agents/topics.yaml and agents/schemas are symlinks to the top-level files: COPY keeps a symlink as
    it is, so its target must be in the build stage too, at the same place relative to agents/."""
    links = [path for path in (ROOT / "agents").iterdir() if path.is_symlink()]
    assert {path.name for path in links} >= {"topics.yaml", "schemas"}
    copied = copied_into(build_stage())
    package = copied["agents"][1]
    for link in links:
        target = (ROOT / "agents" / link.readlink()).resolve().relative_to(ROOT)
        assert str(target) in copied, f"agents/{link.name} -> {link.readlink()}: {target} is not copied"
        lands = PurePosixPath(os.path.normpath(package / str(link.readlink())))
        assert copied[str(target)][1] == lands, f"agents/{link.name} would point at {lands}, not at the copy"


def test_build_context_has_what_the_image_copies() -> None:
    assert DOCKERFILE.is_file()
    for op, args in dockerfile_instructions():
        if op != "COPY" or args.startswith("--from"):
            continue
        *sources, _ = args.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert not ignored(source), f"COPY {source}: excluded by .dockerignore"


def test_dockerignore_keeps_local_state_out() -> None:
    for path in (".git", ".venv", ".kafka", "data", ".env", "tests"):
        assert ignored(path), f".dockerignore should exclude {path}"
