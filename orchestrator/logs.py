"""Logging set-up: readable lines on a terminal, JSON lines when asked (containers).

Every record carries its request context (user, session, worker) when there is one: handlers set
`CONTEXT` while they run, and worker output comes through loggers named orchestrator.worker.<name>.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

# (user id, session id) of the command being handled, if any.
CONTEXT: contextvars.ContextVar[tuple[str | None, str | None] | None] = contextvars.ContextVar(
    "orchestrator_log_context", default=None)

WORKER_LOGGER_PREFIX = "orchestrator.worker."
CONTEXT_KEYS = ("user", "session", "worker")


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        context = CONTEXT.get()
        if context is not None:
            if getattr(record, "user", None) is None:
                record.user = context[0]
            if getattr(record, "session", None) is None:
                record.session = context[1]
        if record.name.startswith(WORKER_LOGGER_PREFIX) and getattr(record, "worker", None) is None:
            record.worker = record.name[len(WORKER_LOGGER_PREFIX):]
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        tags = [f"{key}={value}" for key in ("user", "session")
                if (value := getattr(record, key, None)) is not None]
        return f"{line} [{' '.join(tags)}]" if tags else line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in CONTEXT_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = []
    add_handler(handler)
    root.setLevel(level.upper())
    # uvicorn's per-request access log is per-packet noise for polling clients.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


def add_handler(handler: logging.Handler) -> None:
    handler.addFilter(ContextFilter())
    logging.getLogger().addHandler(handler)
