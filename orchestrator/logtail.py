"""The last log lines, kept in memory for the operator page and `orchestrator logs`."""

from __future__ import annotations

import collections
import itertools
import logging
import threading
from typing import Any

from .logs import TextFormatter


class LogTail(logging.Handler):
    def __init__(self, capacity: int = 2000) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(TextFormatter())
        self._lines: collections.deque[dict[str, Any]] = collections.deque(maxlen=capacity)
        self._seq = itertools.count(1)
        self._lock = threading.Lock()  # records may come from worker threads (NTP queries)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # a broken record must not break logging
            return
        with self._lock:
            self._lines.append({"seq": next(self._seq), "level": record.levelname.lower(), "line": line})

    def since(self, seq: int, limit: int = 500) -> list[dict[str, Any]]:
        with self._lock:
            lines = [entry for entry in self._lines if entry["seq"] > seq]
        return lines[-limit:]
