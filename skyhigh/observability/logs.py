"""Structured (JSON lines) logging with request and event ids carried in context variables."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
event_id_var: ContextVar[str | None] = ContextVar("event_id", default=None)

# Only these extras reach the log line: a log call can never leak a token or audio by
# passing a whole request or payload object.
ALLOWED_FIELDS = (
    "event_type",
    "step",
    "status",
    "duration_s",
    "attempt",
    "code",
    "error",
    "method",
    "path",
    "status_code",
    "count",
    "engine",
    "model",
    "queue",
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name, var in (("request_id", request_id_var), ("event_id", event_id_var)):
            value = getattr(record, name, None) or var.get()
            if value:
                line[name] = value
        for field in ALLOWED_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                line[field] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("skyhigh")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
