"""A real `orchestrator serve` process on a free loopback port, and exact raw HTTP requests to it.

Requests are written by hand so that paths reach the server byte for byte (HTTP libraries
normalise `..` away, which would hide the path-traversal cases).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator_process import Server
from orchestrator_process import start_server as start_process

TOKEN = "operator-secret-7f3a"  # the operator token of the token_server fixture


def start_server(tmp_path: Path, *args: str, config: Path | None = None) -> Server:
    """The shared process helper, with drains that end at once (tests stop servers often)."""
    return start_process(tmp_path, "--drain-grace-s", "0", *args, config=config)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def request(port: int, method: str, target: str, headers: dict[str, str] | None = None,
                  body: bytes = b"") -> Reply:
    """One HTTP/1.1 request with `target` sent verbatim; the whole answer (the server closes)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close",
             f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        async with asyncio.timeout(10):
            raw = await reader.read(-1)
    finally:
        writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = {name.strip().lower(): value.strip()
              for name, value in (line.split(":", 1) for line in header_lines)}
    return Reply(int(status_line.split()[1]), fields, payload)
