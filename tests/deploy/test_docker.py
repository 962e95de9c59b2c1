"""Dockerfile and .dockerignore: a python:3.11-slim image, non-root, running the worker, with the files
the worker reads at run time inside it."""

from __future__ import annotations

import fnmatch
import json
import shlex

from tests.deploy.support import DOCKERFILE, ROOT, WORKER_COMMAND, dockerfile_instructions, settings_env_names


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


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


def test_env_names_are_settings_and_point_into_the_image() -> None:
    env = env_of(final_stage())
    names = {k for k in env if k.startswith("INVENTORY_")}
    assert names <= settings_env_names(), sorted(names - settings_env_names())
    copied = {}
    for op, args in final_stage():
        if op == "COPY" and not args.startswith("--from"):
            source, target = args.split()
            copied[target.rstrip("/")] = source
    # Settings would look for topics.yaml and schemas/ beside the installed package (site-packages).
    assert copied[env["INVENTORY_TOPICS_FILE"]] == "topics.yaml"
    assert copied[env["INVENTORY_SCHEMAS_DIR"]] == "schemas"
    assert env["INVENTORY_WEB_HOST"] == "0.0.0.0"
    assert env["INVENTORY_DATA_DIR"] == "/data"


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
