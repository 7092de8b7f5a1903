"""The servers under test: one in-memory orchestrator, or a Redis and two `--state redis://` processes.

Started through bench.loadgen.servers (fresh processes, free ports, killed at the end)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from bench.loadgen.servers import free_port, orchestrator_argv, started, stop

# Rate limits off: the benchmark measures capacity, not the per-connection command budget.
ENV = {"ORCHESTRATOR_NTP_SERVERS": "localtime", "ORCHESTRATOR_COMMAND_RATE": "1000000",
       "ORCHESTRATOR_COMMAND_BURST": "1000000", "ORCHESTRATOR_MAX_SESSIONS": "10000"}


@dataclass
class Stack:
    urls: list[str]  # one per orchestrator process
    pids: list[int]  # orchestrators and redis-server: their CPU is the cost of a message


async def ping(port: int) -> bool:
    with contextlib.suppress(OSError):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"PING\r\n")
        reply = await reader.read(16)
        writer.close()
        return reply.startswith(b"+PONG")
    return False


@contextlib.asynccontextmanager
async def redis_server(log_dir: Path) -> AsyncIterator[tuple[int, int]]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed (scripts/install --test installs it)")
    port = free_port("127.0.0.1")
    log = (log_dir / "cluster-redis.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", str(log_dir), stdout=log, stderr=log, start_new_session=True)
    try:
        for _ in range(200):
            if await ping(port):
                break
            await asyncio.sleep(0.05)
        yield port, proc.pid
    finally:
        await stop(proc)
        log.close()


@contextlib.asynccontextmanager
async def single(log_dir: Path) -> AsyncIterator[Stack]:
    port = free_port("127.0.0.1")
    url = f"http://127.0.0.1:{port}"
    argv = [*orchestrator_argv("127.0.0.1", port), "--config", str(log_dir / "absent.yaml")]
    async with started("single", argv, url, log_dir / "cluster-single.log", None, ENV) as server:
        yield Stack([url], [server.pid])


@contextlib.asynccontextmanager
async def cluster(log_dir: Path, processes: int = 2) -> AsyncIterator[Stack]:
    async with redis_server(log_dir) as (redis_port, redis_pid), contextlib.AsyncExitStack() as stack:
        urls, pids = [], [redis_pid]
        for i in range(processes):
            port = free_port("127.0.0.1")
            url = f"http://127.0.0.1:{port}"
            argv = [*orchestrator_argv("127.0.0.1", port), "--config", str(log_dir / "absent.yaml"),
                    "--state", f"redis://127.0.0.1:{redis_port}/0"]
            server = await stack.enter_async_context(
                started(f"node{i}", argv, url, log_dir / f"cluster-node{i}.log", None, ENV))
            urls.append(url)
            pids.append(server.pid)
        yield Stack(urls, pids)
