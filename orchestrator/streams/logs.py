"""A worker's stdout/stderr: every line to its own rotating file, a rate-limited share to our log.

The pipes are drained continuously (a worker blocked on a full pipe would hang), lines are cut at a
bounded length, and a worker that floods its output costs a counter, not the orchestrator's log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from logging.handlers import RotatingFileHandler
from pathlib import Path

from .config import LogLimits

_LEVELS = {name: getattr(logging, name) for name in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")}


class WorkerLog:
    """Output sink of one worker instance (all its restarts share it)."""

    def __init__(self, name: str, log_dir: Path | None, limits: LogLimits):
        self.logger = logging.getLogger(f"orchestrator.worker.{name}")
        self._limits = limits
        self._tokens = float(limits.burst)
        self._refilled = time.monotonic()
        self.suppressed = 0
        self._file: RotatingFileHandler | None = None
        if log_dir is not None:
            self._file = RotatingFileHandler(log_dir / f"{name}.log", maxBytes=limits.file_max_bytes,
                                             backupCount=limits.file_backups, encoding="utf-8", delay=True)
            self._file.setFormatter(logging.Formatter("%(asctime)s %(stream)s %(message)s"))

    def _allow(self) -> bool:
        now = time.monotonic()
        refill = (now - self._refilled) * self._limits.lines_per_s
        self._tokens = min(self._limits.burst, self._tokens + refill)
        self._refilled = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def _flush_suppressed(self) -> None:
        if self.suppressed:
            self.logger.warning("%d output lines not shown here (rate limit; the worker's log file has them)",
                                self.suppressed)
            self.suppressed = 0

    def line(self, text: str, stream: str) -> None:
        """One output line; its level is taken from the worker's "LEVEL name: message" format."""
        first = text.split(" ", 1)[0]
        level = _LEVELS.get(first, logging.INFO if stream == "stdout" else logging.WARNING)
        if self._file is not None:
            self._file.handle(logging.makeLogRecord(
                {"msg": text, "levelno": level, "levelname": logging.getLevelName(level), "stream": stream}))
        if not self.logger.isEnabledFor(level):
            return
        if self._allow():
            self._flush_suppressed()
            self.logger.log(level, "%s", text)
        else:
            self.suppressed += 1

    async def pump(self, reader: asyncio.StreamReader, stream: str) -> None:
        """Read a pipe to EOF, line by line, cutting lines longer than max_line_bytes."""
        limit = self._limits.max_line_bytes
        buf = b""
        skipping = False
        while chunk := await reader.read(65536):
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                if not skipping:
                    self.line(raw[:limit].decode("utf-8", "replace").rstrip("\r"), stream)
                skipping = False
            if len(buf) > limit and not skipping:
                self.line(buf[:limit].decode("utf-8", "replace") + " [cut]", stream)
                skipping = True
            if skipping:
                buf = b""
        if buf and not skipping:
            self.line(buf[:limit].decode("utf-8", "replace"), stream)

    def close(self) -> None:
        self._flush_suppressed()
        if self._file is not None:
            self._file.close()
