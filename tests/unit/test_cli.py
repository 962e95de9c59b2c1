"""The command line's own options: --version, --json, and a warning for an INVENTORY_* variable that names
no setting (pydantic-settings ignores it silently)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from agents.__main__ import main, package_version
from agents.settings import get_settings, unknown_variables


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    """Settings are read once per process (get_settings is cached): each test reads its own environment."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_a_misspelt_setting_is_named_with_the_setting_it_resembles() -> None:
    (warning,) = unknown_variables({"INVENTORY_COMIT_INTERVAL_S": "1", "INVENTORY_COMMIT_INTERVAL_S": "1"})
    assert "INVENTORY_COMIT_INTERVAL_S is not a setting" in warning
    assert "did you mean INVENTORY_COMMIT_INTERVAL_S?" in warning


def test_settings_other_variables_and_the_test_suites_own_are_not_warned_about() -> None:
    environ = {
        "INVENTORY_KAFKA_BOOTSTRAP": "x",
        "INVENTORY_API_TOKEN": "t",
        "INVENTORY_TEST_BOOTSTRAP": "x",
        "PATH": "/bin",
        "INVENTORY_NOTHING_LIKE_IT_AT_ALL": "1",
    }
    assert unknown_variables(environ) == ["warning: INVENTORY_NOTHING_LIKE_IT_AT_ALL is not a setting and is ignored"]


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"python -m agents {package_version()}"
    assert package_version() != "unknown"  # `make install` installs the package


def test_topics_check_can_answer_in_json(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INVENTORY_COMIT_INTERVAL_S", "1")
    assert main(["topics", "check", "--json"]) == 0
    captured = capsys.readouterr()
    answer = json.loads(captured.out)
    assert answer["ok"] is True and answer["problems"] == [] and answer["topics"] > 10
    assert "INVENTORY_COMIT_INTERVAL_S is not a setting" in captured.err


def test_a_broker_that_cannot_be_reached_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INVENTORY_KAFKA_BOOTSTRAP", "127.0.0.1:1")  # nothing listens on port 1
    assert main(["topics", "apply"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Kafka at 127.0.0.1:1: ") and "\n" not in err and "Traceback" not in err
