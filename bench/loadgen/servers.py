"""Starting the servers under test as their own processes, one at a time, on free ports."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil

from .client import Client

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 30.0


@dataclass
class Server:
    name: str
    url: str
    pid: int | None  # None for a server we did not start: no CPU or RSS figures then


def source_state() -> str:
    """Which orchestrator code a run measured: commit, uncommitted changes, hash of the sources.

    Rows start fresh server processes from the working tree, so a tree edited mid-run would mix
    versions; the run records this before and after.
    """
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False)
        return done.stdout.strip()

    digest = hashlib.sha1()
    for path in sorted((REPO / "orchestrator").rglob("*.py")):
        digest.update(path.read_bytes())
    dirty = "with uncommitted changes" if git("status", "--porcelain", "--", "orchestrator") else "clean"
    commit = git("rev-parse", "--short", "HEAD") or "?"
    return f"commit {commit}, orchestrator/ {dirty}, sources {digest.hexdigest()[:10]}"


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def orchestrator_env(clients: int, session_size: int, scratch: Path) -> dict[str, str]:
    """Capacity limits that fit the load (never below the orchestrator's defaults), and no stream
    worker configuration (a path that does not exist: the orchestrator then runs no workers): the
    table measures the Socket.IO plane, not the refusal of the 1001st session nor idle workers."""
    sessions = -(-clients // session_size) + 16
    return {
        "ORCHESTRATOR_MAX_SESSIONS": str(max(1_000, sessions)),
        "ORCHESTRATOR_MAX_CONNECTIONS": str(max(10_000, clients + 16)),
        "ORCHESTRATOR_MAX_USERS_PER_SESSION": str(max(64, session_size)),
        "ORCHESTRATOR_CONFIG": str(scratch / "no-stream-workers.yaml"),
    }


def orchestrator_argv(host: str, port: int, template: str | None = None) -> list[str]:
    """`orchestrator serve` from this interpreter's environment, or a custom command template
    with {host} and {port} (to measure another build, e.g. the Node orchestrator)."""
    if template:
        return [part.format(host=host, port=port) for part in shlex.split(template)]
    script = Path(sys.executable).parent / "orchestrator"
    return [str(script) if script.exists() else "orchestrator", "serve", "--host", host, "--port", str(port)]


def relay_argv(host: str, port: int, direct: bool = False) -> list[str]:
    return [sys.executable, "-m", "bench.loadgen.bare_relay", "--host", host, "--port", str(port),
            *(["--direct"] if direct else [])]


def pin(pid: int, cpus: list[int]) -> None:
    """Pin every thread of pid and of its children: sched_setaffinity on a pid moves one thread only."""
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        for thread in proc.threads():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(thread.id, cpus)


async def wait_ready(url: str, proc: asyncio.subprocess.Process, log: Path) -> None:
    """Until a full Engine.IO/Socket.IO handshake succeeds (a bound port is not yet a server)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with aiohttp.ClientSession() as http:
        while True:
            if proc.returncode is not None:
                raise RuntimeError(f"server exited with status {proc.returncode}; its output is in {log}")
            client = Client(http, url)
            try:
                await client.open()
                await client.close()
                return
            except (OSError, aiohttp.ClientError, ConnectionError):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"server not ready after {READY_TIMEOUT_S} s; see {log}") from None
                await asyncio.sleep(0.1)


async def stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM to the process group we created, SIGKILL if it lingers."""
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        if proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await proc.wait()


@contextlib.asynccontextmanager
async def started(
    name: str, argv: list[str], url: str, log: Path, cpus: list[int] | None, env: dict[str, str] | None = None
) -> AsyncIterator[Server]:
    """Run argv (cwd = repository root, output to log) for the duration of the block."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        **(env or {}),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        await wait_ready(url, proc, log)
        if cpus:
            pin(proc.pid, cpus)
        yield Server(name, url, proc.pid)
    finally:
        await stop(proc)
