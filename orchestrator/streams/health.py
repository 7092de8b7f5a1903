"""Health checks and resource sampling of one worker.

A check must prove the worker still serves, not just that its process exists: `healthz` and `http` need an
HTTP answer within the timeout (a SIGSTOPped worker's kernel still accepts connections, but nobody
answers), `tcp` only proves a listener, so the sampler also reports a stopped process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp
import psutil

from .urls import url_host


async def probe(http: aiohttp.ClientSession, check: str, host: str, port: int, path: str,
                timeout: float) -> tuple[bool, str, dict | None]:
    """(passed, why, the /healthz JSON object when check == "healthz")."""
    try:
        async with asyncio.timeout(timeout):
            if check == "tcp":
                _, writer = await asyncio.open_connection(host, port)
                writer.close()
                return True, "ok", None
            async with http.get(f"http://{url_host(host)}:{port}{path}", allow_redirects=False) as resp:
                body = await resp.content.read(65536)
            if check == "http":
                return 200 <= resp.status < 400, f"HTTP {resp.status}", None
            if resp.status != 200:
                return False, f"HTTP {resp.status}", None
            data = json.loads(body)
            if isinstance(data, dict) and data.get("status") == "ok":
                return True, "ok", data
            return False, "answer is not {\"status\": \"ok\", ...}", None
    except TimeoutError:
        return False, f"no answer within {timeout:g} s", None
    except (OSError, aiohttp.ClientError, ValueError) as e:
        return False, f"{type(e).__name__}: {e}".rstrip(": "), None


async def fetch_stats(http: aiohttp.ClientSession, host: str, port: int, path: str,
                      timeout: float) -> dict | None:
    """The worker's own counters (GET /stats, a JSON object of at most 256 KiB), or None."""
    try:
        async with asyncio.timeout(timeout), http.get(f"http://{url_host(host)}:{port}{path}") as resp:
            data = json.loads(await resp.content.read(256 * 1024)) if resp.status == 200 else None
    except (TimeoutError, OSError, aiohttp.ClientError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class Usage:
    """CPU and memory of a worker and its helpers; keeps the Process objects (cpu_percent needs them)."""

    #: Finding a worker's helpers scans every process on the machine: done on every Nth sample only.
    CHILDREN_EVERY = 5

    def __init__(self, pid: int):
        self.pid = pid
        self._procs: dict[int, psutil.Process] = {}
        self._samples = 0

    def sample(self) -> tuple[float, int, bool]:
        """(cpu percent of one core since the last sample, rss bytes, leader stopped by a signal)."""
        try:
            root = self._procs.get(self.pid) or psutil.Process(self.pid)
            if self._samples % self.CHILDREN_EVERY == 0:
                current = [root, *root.children(recursive=True)]
            else:
                current = [p for p in self._procs.values() if p.is_running()] or [root]
        except psutil.Error:
            return 0.0, 0, False
        self._samples += 1
        procs: dict[int, psutil.Process] = {}
        for p in current:
            known = self._procs.get(p.pid)
            procs[p.pid] = known if known is not None and known == p else p
        self._procs = procs
        cpu, rss, stopped = 0.0, 0, False
        for p in procs.values():
            with contextlib.suppress(psutil.Error), p.oneshot():
                cpu += p.cpu_percent(None)
                rss += p.memory_info().rss
                stopped |= p.pid == self.pid and p.status() == psutil.STATUS_STOPPED
        return cpu, rss, stopped
