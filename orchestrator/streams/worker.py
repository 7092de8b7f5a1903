"""One worker instance: a slot (port, control port, UDP slice) and the process lifecycle on it.

States follow supervisord: STARTING (spawned, not yet healthy) → RUNNING (a health check passed) →
on exit or failed checks BACKOFF (waiting to restart) or, when the restart policy or the crash-loop limit
says no more, FATAL (failed) / EXITED (exited cleanly, not to be restarted); STOPPING → STOPPED when the
supervisor stops it. An instance keeps its slot across restarts, so its sessions keep their URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import os
import random
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from . import placeholders, procs
from .config import WorkerKind
from .health import Usage, fetch_stats, probe
from .logs import WorkerLog

log = logging.getLogger("orchestrator.streams")


class State(enum.Enum):
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    EXITED = "EXITED"
    FATAL = "FATAL"


TERMINAL = frozenset({State.FATAL, State.EXITED})


@dataclass(frozen=True)
class Slot:
    index: int
    port: int
    control_port: int | None = None
    udp: tuple[int, int] | None = None


@dataclass(frozen=True)
class Outcome:
    """How one life of the process ended."""

    reason: str
    code: int | None  # exit code, -N for signal N, None if it never started
    failure: bool


def _free_loopback_port(avoid: set[int]) -> int:
    """An unused loopback port outside every configured pool (a pool port taken now would fail later)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in avoid:
            return port
    raise OSError("no free loopback port outside the configured pools")


def _check_host(bind: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(bind, bind)


class Instance:
    def __init__(self, kind: str, cfg: WorkerKind, slot: Slot, *, public_host: str, bind_host: str,
                 run_dir: Path, log_dir: Path | None, http: aiohttp.ClientSession,
                 on_state: Callable[[Instance, State, State], None],
                 reserved_ports: Callable[[], set[int]] = set, on_sample: Callable[[], None] = lambda: None):
        self.kind, self.cfg, self.slot = kind, cfg, slot
        self.public_host, self.bind_host = public_host, cfg.host or bind_host
        self.hosts = (public_host, bind_host)  # the config's top-level values it was started with
        self.name = f"{kind}-{slot.port}"
        self.sessions: dict[str, int] = {}  # session id → users reported
        self.state = State.STOPPED
        self.reason = ""
        self.pid: int | None = None
        self.control_port = slot.control_port
        self.restarts = 0
        self.cpu, self.rss = 0.0, 0
        self.last_exit: int | None = None
        self.health: dict | None = None
        self.stats: dict | None = None
        self.since = time.time()
        self.replace_pending = False  # it served sessions when its process failed
        self.retiring = False
        self._recent: deque[float] = deque()
        self._run_dir, self._http, self._on_state = run_dir, http, on_state
        self._reserved_ports, self._on_sample = reserved_ports, on_sample
        self._proc: asyncio.subprocess.Process | None = None
        self._usage: Usage | None = None
        self._task: asyncio.Task | None = None
        self._stop_task: asyncio.Task | None = None
        self._pumps: list[asyncio.Task] = []
        self.output = WorkerLog(self.name, log_dir, cfg.log)

    @property
    def port(self) -> int:
        return self.slot.port

    @property
    def pidfile(self) -> Path:
        return self._run_dir / f"{self.name}{procs.PIDFILE_SUFFIX}"

    def _set(self, state: State, reason: str = "") -> None:
        old, self.state, self.reason, self.since = self.state, state, reason, time.time()
        level = logging.ERROR if state is State.FATAL else logging.INFO
        log.log(level, "worker %s %s -> %s%s (pid %s, port %d, sessions %d)", self.name, old.value,
                state.value, f": {reason}" if reason else "", self.pid, self.port, len(self.sessions))
        self._on_state(self, old, state)

    def start(self) -> None:
        """STARTING at once (so placement can wait for it), the lifecycle in a task."""
        self._set(State.STARTING)
        self._task = asyncio.create_task(self._run(), name=f"worker {self.name}")

    async def stop(self, grace: float | None = None) -> None:
        """Stop for good: cancel the lifecycle, SIGTERM/SIGKILL the group; returns once it is gone.

        Idempotent; a cancelled caller does not cancel the stop itself.
        """
        if self._stop_task is None:
            self._stop_task = asyncio.create_task(self._stop(grace), name=f"stop {self.name}")
        await asyncio.shield(self._stop_task)

    async def restart(self) -> None:
        """Operator restart: end the process, forget the crash-loop history, start again on the same slot."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._proc is not None:
            self._set(State.STOPPING, "restart requested")
            await self._end_process(self.cfg.restart.stop_grace_s)
        self._recent.clear()
        self.replace_pending = bool(self.sessions)
        self.restarts += 1
        self.start()

    @property
    def stopping(self) -> bool:
        return self._stop_task is not None

    async def _stop(self, grace: float | None) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._proc is not None:
            self._set(State.STOPPING)
            await self._end_process(self.cfg.restart.stop_grace_s if grace is None else grace)
        self._set(State.STOPPED)
        self.output.close()
        with contextlib.suppress(OSError):
            (self._run_dir / f"{self.name}.settings.json").unlink(missing_ok=True)

    async def _run(self) -> None:
        try:
            while True:
                outcome = await self._life()
                if self.sessions and outcome.failure:
                    self.replace_pending = True
                refusal = self._refuse_restart(outcome)
                if refusal:
                    self._set(State.EXITED if not outcome.failure else State.FATAL, refusal)
                    return
                delay = self._backoff()
                self._set(State.BACKOFF, f"{outcome.reason}; restart {len(self._recent)} in {delay:.2f} s")
                await asyncio.sleep(delay)
                self.restarts += 1
        except Exception as e:  # a bug or an unwritable run_dir must not leave a half-managed process
            log.exception("worker %s: supervision failed", self.name)
            await self._end_process(self.cfg.restart.stop_grace_s)
            self._set(State.FATAL, f"supervision failed: {e}")

    def _refuse_restart(self, o: Outcome) -> str | None:
        policy = self.cfg.restart.policy
        if policy == "never" or (policy == "on-failure" and not o.failure):
            return f"{o.reason}; restart policy {policy}"
        if o.code in self.cfg.restart.fatal_exit_codes:
            return f"{o.reason} (a configuration error: not restarted)"
        now = time.monotonic()
        while self._recent and now - self._recent[0] > self.cfg.restart.window_s:
            self._recent.popleft()
        if len(self._recent) >= self.cfg.restart.max_restarts:
            window = self.cfg.restart.window_s
            return f"{o.reason}; crash loop: {len(self._recent)} restarts within {window:g} s"
        self._recent.append(now)
        return None

    def _backoff(self) -> float:
        b = self.cfg.restart.backoff
        delay = min(b.max_s, b.initial_s * b.factor ** (len(self._recent) - 1))
        return delay * (1 + random.uniform(-b.jitter, b.jitter))

    def _values(self) -> dict[str, object]:
        if self.slot.control_port is None and self.cfg.uses("control_port"):
            self.control_port = _free_loopback_port(self._reserved_ports())
        udp = self.slot.udp or ("", "")
        return {"python": sys.executable, "port": self.port, "control_port": self.control_port or "",
                "udp_min": udp[0], "udp_max": udp[1], "host": self.bind_host,
                "public_host": self.public_host, "log_level": self.cfg.log_level.upper(), "name": self.name,
                "kind": self.kind, "settings_file": str(self._run_dir / f"{self.name}.settings.json")}

    def _command(self) -> tuple[list[str], dict[str, str], str | None]:
        values = self._values()

        def fill(v):
            if isinstance(v, str):
                return placeholders.render(v, values)
            if isinstance(v, dict):
                return {k: fill(x) for k, x in v.items()}
            return [fill(x) for x in v] if isinstance(v, list) else v

        Path(str(values["settings_file"])).write_text(json.dumps(fill(self.cfg.settings)), encoding="utf-8")
        env = {"PYTHONUNBUFFERED": "1", **os.environ, **fill(self.cfg.env)}
        return fill(self.cfg.command), env, self.cfg.cwd

    async def _life(self) -> Outcome:
        """Spawn, wait until healthy, watch until it exits or fails its checks; always ends with it gone."""
        argv, env, cwd = self._command()
        self.pid = None
        if self.state is not State.STARTING:
            self._set(State.STARTING)
        spawning = asyncio.ensure_future(procs.spawn(argv, env=env, cwd=cwd))
        try:
            proc = await asyncio.shield(spawning)
        except OSError as e:
            return Outcome(f"cannot start {argv[0]!r}: {e}", None, True)
        except asyncio.CancelledError:  # stopped while spawning: hand the process to stop()
            with contextlib.suppress(OSError):
                self._proc = await spawning
            raise
        self._proc, self.pid = proc, proc.pid
        procs.write_pidfile(self.pidfile, proc.pid, self.name, argv)
        self._pumps = [asyncio.create_task(self.output.pump(s, n))
                       for s, n in ((proc.stdout, "stdout"), (proc.stderr, "stderr"))]
        exited = asyncio.ensure_future(proc.wait())
        try:
            outcome = await self._until_healthy(proc, exited)
            if outcome is None:
                self._set(State.RUNNING)
                outcome = await self._watch(proc, exited)
        finally:
            exited.cancel()
        await self._end_process(self.cfg.restart.stop_grace_s)
        return outcome

    def _exit_outcome(self, code: int) -> Outcome:
        what = f"exited with code {code}" if code >= 0 else f"killed by signal {-code}"
        return Outcome(what, code, code != 0)

    async def _until_healthy(self, proc, exited: asyncio.Future) -> Outcome | None:
        h = self.cfg.health
        deadline = time.monotonic() + h.startup_timeout_s
        pause = 0.02
        self._usage = Usage(proc.pid)
        while True:
            if exited.done():
                return self._exit_outcome(exited.result())
            ok, why, self.health = await self._probe()
            if ok:
                return None
            if time.monotonic() >= deadline:
                return Outcome(f"not healthy within {h.startup_timeout_s:g} s ({why})", proc.returncode, True)
            await asyncio.wait({exited}, timeout=min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 0.5, h.interval_s)

    def _health_target(self) -> tuple[str, int]:
        h = self.cfg.health
        port = self.control_port if h.target == "control_port" else self.port
        host = h.host or ("127.0.0.1" if h.target == "control_port" else _check_host(self.bind_host))
        return host, int(port or 0)

    async def _probe(self) -> tuple[bool, str, dict | None]:
        h = self.cfg.health
        return await probe(self._http, h.check, *self._health_target(), h.path, h.timeout_s)

    async def _watch(self, proc, exited: asyncio.Future) -> Outcome:
        h = self.cfg.health
        failed = 0
        while True:
            await asyncio.wait({exited}, timeout=h.interval_s)
            if exited.done():
                return self._exit_outcome(exited.result())
            self.cpu, self.rss, stopped = self._usage.sample() if self._usage else (0.0, 0, False)
            ok, why, health = (False, "process stopped (SIGSTOP)", None) if stopped else await self._probe()
            if exited.done():
                return self._exit_outcome(exited.result())
            if ok:
                failed, self.health = 0, health
                if h.check == "healthz" and h.stats_path:
                    host, port = self._health_target()
                    self.stats = await fetch_stats(self._http, host, port, h.stats_path, h.timeout_s)
                self._on_sample()
                continue
            failed += 1
            log.warning("worker %s failed health check %d/%d: %s", self.name, failed, h.unhealthy_after, why)
            if failed >= h.unhealthy_after:
                return Outcome(f"unhealthy: {why}", None, True)

    async def _end_process(self, grace: float) -> None:
        proc = self._proc
        if proc is None:
            return
        await procs.stop_group(proc, grace)
        _, pending = await asyncio.wait(self._pumps, timeout=1.0) if self._pumps else (None, ())
        for t in pending:
            t.cancel()
        self.last_exit = proc.returncode
        self.pidfile.unlink(missing_ok=True)
        self._proc, self.pid, self.cpu, self.rss, self.stats = None, None, 0.0, 0, None

    def snapshot(self) -> dict:
        return {"name": self.name, "kind": self.kind, "state": self.state.value, "reason": self.reason,
                "since": self.since, "pid": self.pid, "port": self.port, "control_port": self.control_port,
                "udp_ports": list(self.slot.udp) if self.slot.udp else None,
                "sessions": dict(self.sessions), "users": sum(self.sessions.values()),
                "capacity": self.cfg.capacity, "restarts": self.restarts, "last_exit": self.last_exit,
                "cpu_percent": round(self.cpu, 1), "rss_bytes": self.rss, "health": self.health,
                "stats": self.stats,
                "log_lines_suppressed": self.output.suppressed, "retiring": self.retiring}
