"""Worker logging: one line per record, as text or (INVENTORY_LOG_JSON=true) as one JSON object, with a
traceback folded into the same line and every message cut to a bounded length."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import orjson

MAX_LINE_CHARS = 8_000


def _clip(text: str) -> str:
    return text if len(text) <= MAX_LINE_CHARS else text[: MAX_LINE_CHARS - 20] + "... (cut)"


class OneLineFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return _clip(super().format(record).replace("\n", " | "))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": _clip(record.getMessage()),
        }
        if record.exc_info:
            body["exception"] = _clip(self.formatException(record.exc_info))
        return orjson.dumps(body).decode()


def configure_logging(level: str, as_json: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if as_json else OneLineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
