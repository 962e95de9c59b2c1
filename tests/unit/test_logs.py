"""Worker logs: one line per record, text or JSON, tracebacks folded in, lines bounded."""

from __future__ import annotations

import io
import json
import logging

from agents.logs import MAX_LINE_CHARS, JsonFormatter, OneLineFormatter, configure_logging


def _record(message: str, exc: bool = False) -> logging.LogRecord:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        import sys

        info = sys.exc_info() if exc else None
    return logging.LogRecord("agents", logging.WARNING, __file__, 1, message, (), info)


def test_text_lines_fold_tracebacks_into_one_line() -> None:
    line = OneLineFormatter().format(_record("dead letter\nfrom x", exc=True))
    assert "\n" not in line
    assert "dead letter | from x" in line and "ValueError: boom | second line" in line


def test_json_lines_are_one_object_each() -> None:
    line = JsonFormatter().format(_record("hello", exc=True))
    assert "\n" not in line
    body = json.loads(line)
    assert (body["level"], body["logger"], body["message"]) == ("WARNING", "agents", "hello")
    assert "ValueError: boom" in body["exception"]


def test_lines_are_bounded() -> None:
    assert len(OneLineFormatter().format(_record("x" * 50_000))) <= MAX_LINE_CHARS
    assert len(json.loads(JsonFormatter().format(_record("x" * 50_000)))["message"]) <= MAX_LINE_CHARS


def test_configure_logging_installs_one_handler() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("warning", as_json=True)
        assert len(root.handlers) == 1 and isinstance(root.handlers[0].formatter, JsonFormatter)
        stream = io.StringIO()
        root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
        logging.getLogger("agents.x").info("not shown")
        logging.getLogger("agents.x").warning("shown")
        assert [json.loads(line)["message"] for line in stream.getvalue().splitlines()] == ["shown"]
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
