"""The stream supervisor: worker pools per kind, session placement, sfuData, reload and shutdown.

Interface used by the orchestrator core (all methods run on its event loop):

    sup = Supervisor(config, log_dir=..., run_dir=..., on_worker_replaced=cb)
    await sup.start()                      reap orphans of a previous run, start warm workers
    await sup.acquire(session_id, proto)   Placement, or None for protocols without a worker;
                                           NoWorkerAvailable when no worker can take the session
    sup.sfu_data(session_id, user_id, public_host)   {"url_gen", "url_audio", "url_pcc"}
    sup.update_load(session_id, users)
    await sup.release(session_id)
    await sup.reload(path) -> list[str]    errors; empty = applied to new sessions
    sup.snapshot() / sup.ready()
    await sup.stop(grace_s)

Per-session kinds (sessions_per_worker 1) never share a process: a released worker is stopped and a fresh
one started, and `warm` idle instances are kept so that a new session does not wait for a process start.
A worker that fails is restarted on the same slot (same URLs); once it is FATAL its sessions move to other
workers. In both cases `on_worker_replaced(session_ids)` tells the orchestrator that these sessions'
members need their sfuData again (empty strings if no worker could take them).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from ..streams_port import WorkerUnavailable
from . import placement, procs
from .config import ConfigError, StreamsConfig, WorkerKind, load_config
from .urls import EMPTY, render_sfu_data
from .worker import TERMINAL, Instance, Slot, State

log = logging.getLogger("orchestrator.streams")

ReplacedCallback = Callable[[list[str]], Awaitable[None] | None]
#: Placement decisions kept for snapshot().
DECISIONS_KEPT = 50


class NoWorkerAvailable(WorkerUnavailable):
    """No worker of the session's kind can take it (pool exhausted, failed, or shutting down)."""


@dataclass(frozen=True)
class Placement:
    session_id: str
    kind: str
    worker: str
    port: int


class Supervisor:
    def __init__(self, config: StreamsConfig, *, log_dir: Path | None = None, run_dir: Path,
                 on_worker_replaced: ReplacedCallback | None = None):
        self._config = config
        self._log_dir = Path(log_dir).absolute() if log_dir is not None else None
        self._run_dir = Path(run_dir).absolute()  # workers may run elsewhere: their settings path must hold
        self._on_replaced = on_worker_replaced
        self._instances: list[Instance] = []
        self._by_session: dict[str, Instance] = {}
        self._decisions: deque[dict] = deque(maxlen=DECISIONS_KEPT)
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._http: aiohttp.ClientSession | None = None
        self._stopping = False
        self.reaped: list[int] = []
        self.invalid_hosts = 0

    @property
    def on_worker_replaced(self) -> ReplacedCallback | None:
        """The callback for sessions whose worker was replaced; may be set after construction."""
        return self._on_replaced

    @on_worker_replaced.setter
    def on_worker_replaced(self, callback: ReplacedCallback | None) -> None:
        self._on_replaced = callback

    # ----- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Stop orphans of a previous run (pid files in run_dir), then start the warm workers."""
        self._run_dir.mkdir(parents=True, exist_ok=True)
        if self._log_dir is not None:
            self._log_dir.mkdir(parents=True, exist_ok=True)
        self.reaped = await asyncio.to_thread(procs.reap_orphans, self._run_dir, 2.0)
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        kinds = ", ".join(self._config.workers) or "none"
        log.info("stream supervisor started (config %s, worker kinds: %s)", self._config.path, kinds)
        for kind in self._config.workers:
            self._top_up(kind)

    async def stop(self, grace_s: float = 2.0) -> None:
        """SIGTERM every worker group, SIGKILL after grace_s; returns when none is left."""
        self._stopping = True
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*(i.stop(grace_s) for i in self._instances), return_exceptions=True)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._instances.clear()
        self._by_session.clear()
        if self._http is not None:
            await self._http.close()
        self._notify()
        log.info("stream supervisor stopped")

    async def reload(self, path: str | Path) -> list[str]:
        """Validate a new file; if valid it applies to new sessions (running workers keep theirs).

        Idle workers of a changed kind are replaced at once, busy ones when their sessions end; FATAL
        workers get a fresh start. Invalid or missing file: the errors, and the old config stays.
        """
        try:
            new = await asyncio.to_thread(load_config, path)
        except ConfigError as e:
            log.error("config reload rejected, keeping the running config:\n%s", "\n".join(e.errors))
            return e.errors
        if new.missing:
            return [f"{path}: (file): not found; the running config is kept"]
        self._config = new
        for inst in list(self._instances):
            cfg = new.workers.get(inst.kind)
            same = cfg == inst.cfg and (new.public_host, new.bind_host) == inst.hosts
            if same and inst.state not in TERMINAL:
                inst.cfg = cfg
            elif not inst.sessions:
                self._retire(inst)
        for kind in new.workers:
            self._top_up(kind)
        log.info("stream config reloaded from %s", path)
        return []

    # ----- sessions --------------------------------------------------------------------------------

    async def acquire(self, session_id: str, protocol: str) -> Placement | None:
        """Place a session on a worker of its protocol's kind; None if that protocol has no worker.

        Idempotent for a session already placed. Waits (up to the kind's startup timeout) only when no
        RUNNING worker has room and one is starting.
        """
        if session_id in self._by_session:
            return self._placement(session_id, self._by_session[session_id])
        cfg = self._config.workers.get(protocol)
        if cfg is None:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cfg.health.startup_timeout_s + 1.0
        while True:
            if self._stopping:
                raise NoWorkerAvailable("shutting down")
            inst, why = self._choose(protocol, cfg)
            decision = self._decision(session_id, protocol, inst, why)
            if inst is None:
                if self._retiring(protocol) and loop.time() < deadline:  # a port frees up once it has exited
                    await self.wait_until(lambda: not self._retiring(protocol), deadline - loop.time())
                    continue
                self._record(decision)
                raise NoWorkerAvailable(f"no {protocol} worker available: {why}")
            inst.sessions[session_id] = 0
            self._by_session[session_id] = inst
            self._top_up(protocol)
            remaining = max(0.0, deadline - loop.time())
            await self.wait_until(lambda i=inst: i.state is not State.STARTING, remaining)
            if self._by_session.get(session_id) is not inst:
                raise NoWorkerAvailable(f"session {session_id} was released while its worker started")
            if inst.state is State.RUNNING:
                self._record(decision)
                return self._placement(session_id, inst)
            inst.sessions.pop(session_id, None)
            del self._by_session[session_id]
            if loop.time() >= deadline:
                decision.update(worker=None, port=None, reason=f"{inst.name} did not start ({inst.reason})")
                self._record(decision)
                raise NoWorkerAvailable(f"{protocol} worker {inst.name} did not start ({inst.reason})")

    async def release(self, session_id: str) -> None:
        """The session is closed: a per-session worker is recycled, a shared one keeps its other sessions."""
        inst = self._by_session.pop(session_id, None)
        if inst is None:
            return
        inst.sessions.pop(session_id, None)
        log.info("session %s released from worker %s", session_id, inst.name)
        current = self._config.workers.get(inst.kind) is inst.cfg
        if inst.sessions:
            return
        if inst.cfg.capacity == 1 or not current or len(self._spare(inst.kind)) > inst.cfg.placement.warm:
            self._retire(inst)
        self._notify()

    def update_load(self, session_id: str, users: int) -> None:
        """Users currently in a session, as the orchestrator counts them (placement weighs them)."""
        if isinstance(users, bool) or not isinstance(users, int) or users < 0:
            raise ValueError(f"users must be a non-negative int, got {users!r}")
        inst = self._by_session.get(session_id)
        if inst is not None and session_id in inst.sessions:
            inst.sessions[session_id] = users

    def sfu_data(self, session_id: str, user_id: str, public_host: str) -> dict[str, str]:
        """The URLs this user of this session connects to; "" values when the session has no worker."""
        inst = self._by_session.get(session_id)
        if inst is None:
            return dict(EMPTY)
        host = public_host if inst.public_host == "auto" else inst.public_host
        try:
            return render_sfu_data(inst.cfg.urls.model_dump(), public_host=host, port=inst.port,
                                   session_id=session_id, user_id=user_id)
        except ValueError as e:  # the client's own Host header: debug only, counted (clients can repeat it)
            self.invalid_hosts += 1
            log.debug("no sfuData for user %s of session %s: %s", user_id, session_id, e)
            return dict(EMPTY)

    async def restart_worker(self, name: str) -> bool:
        """Operator action: restart one worker now (a FATAL one gets a fresh start); False if unknown.

        Its sessions stay on it and are reported through on_worker_replaced once it is RUNNING again.
        """
        inst = next((i for i in self._instances if i.name == name), None)
        if inst is None or inst.retiring or inst.stopping or self._stopping:
            return False
        log.info("worker %s: restart requested", name)
        await inst.restart()
        return True

    def describe(self, session_id: str) -> dict | None:
        """What another orchestrator process needs to render this session's sfuData without us."""
        inst = self._by_session.get(session_id)
        if inst is None:
            return None
        return {"kind": inst.kind, "worker": inst.name, "port": inst.port, "public_host": inst.public_host,
                "urls": inst.cfg.urls.model_dump()}

    def placement_of(self, session_id: str) -> Placement | None:
        inst = self._by_session.get(session_id)
        return None if inst is None else self._placement(session_id, inst)

    # ----- observation -----------------------------------------------------------------------------

    def ready(self) -> bool:
        """Every configured kind has a RUNNING worker or a free slot to start one."""
        return not self.unready_reasons()

    def unready_reasons(self) -> list[str]:
        """Why ready() is False, one line per kind (for /readyz)."""
        if self._stopping:
            return ["stream supervisor stopping"]
        reasons = []
        for kind, cfg in self._config.workers.items():
            running = any(i.state is State.RUNNING for i in self._pool(kind, cfg))
            if not running and self._free_slot(cfg) is None:
                reasons.append(f"no {kind} worker running and no free port to start one")
        return reasons

    def snapshot(self) -> dict:
        kinds = {}
        for kind, cfg in self._config.workers.items():
            pool = self._pool(kind, cfg)
            kinds[kind] = {"ports": len(cfg.ports), "workers": len(pool),
                           "running": sum(i.state is State.RUNNING for i in pool),
                           "sessions": sum(len(i.sessions) for i in pool),
                           "capacity": cfg.capacity, "warm": cfg.placement.warm}
        return {"config": str(self._config.path) if self._config.path else None,
                "config_missing": self._config.missing, "public_host": self._config.public_host,
                "ready": self.ready(), "kinds": kinds,
                "workers": [i.snapshot() for i in self._instances],
                "placements": list(self._decisions), "reaped_orphans": list(self.reaped),
                "invalid_hosts": self.invalid_hosts}

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait for a condition on workers (re-evaluated at every state change and health sample)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            event = self._changed
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)
        return True

    # ----- internals -------------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _placement(self, session_id: str, inst: Instance) -> Placement:
        return Placement(session_id, inst.kind, inst.name, inst.port)

    def _pool(self, kind: str, cfg: WorkerKind) -> list[Instance]:
        """The instances that may take new sessions: current config, not being retired."""
        return [i for i in self._instances if i.kind == kind and i.cfg is cfg and not i.retiring]

    def _spare(self, kind: str) -> list[Instance]:
        cfg = self._config.workers.get(kind)
        if cfg is None:
            return []
        return [i for i in self._pool(kind, cfg) if i.state in (State.STARTING, State.RUNNING, State.BACKOFF)
                and placement.has_room(len(i.sessions), cfg.capacity)]

    def _choose(self, kind: str, cfg: WorkerKind) -> tuple[Instance | None, str]:
        pool = self._pool(kind, cfg)
        cands = [placement.Candidate(i.state.value, len(i.sessions), cfg.capacity, sum(i.sessions.values()),
                                     i.cpu) for i in pool]
        best = placement.choose(cands, cfg.placement.load)
        if best is not None:
            return pool[best], f"least loaded ({cfg.placement.load}) of {len(pool)}"
        starting = [i for i in pool if i.state is State.STARTING and placement.has_room(len(i.sessions),
                                                                                         cfg.capacity)]
        if starting:
            return starting[0], "starting worker"
        slot = self._free_slot(cfg)
        if slot is not None:
            return self._launch(kind, cfg, slot), "new worker"
        busy = sum(1 for i in self._instances if i.kind == kind)
        return None, f"all {len(cfg.ports)} ports in use or failed ({busy} workers, on_exhausted: reject)"

    def _free_slot(self, cfg: WorkerKind) -> Slot | None:
        """A pool index whose port, control port and UDP slice no live instance holds."""
        tcp = {i.port for i in self._instances} | {i.slot.control_port for i in self._instances}
        udp = [i.slot.udp for i in self._instances if i.slot.udp]
        for index, port in enumerate(cfg.ports):
            control = cfg.control_ports[index] if cfg.control_ports else None
            span = cfg.udp_slice(index)
            if port in tcp or (control is not None and control in tcp):
                continue
            if span and any(lo <= span[1] and span[0] <= hi for lo, hi in udp):
                continue
            return Slot(index, port, control, span)
        return None

    def _pool_ports(self) -> set[int]:
        ports = {p for cfg in self._config.workers.values() for pool in (cfg.ports, cfg.control_ports or ())
                 for p in pool}
        return ports | {i.port for i in self._instances}

    def _launch(self, kind: str, cfg: WorkerKind, slot: Slot) -> Instance:
        assert self._http is not None, "start() first"
        inst = Instance(kind, cfg, slot, public_host=self._config.public_host,
                        bind_host=self._config.bind_host, run_dir=self._run_dir, log_dir=self._log_dir,
                        http=self._http, on_state=self._on_state, reserved_ports=self._pool_ports,
                        on_sample=self._notify)
        self._instances.append(inst)
        inst.start()
        return inst

    def _top_up(self, kind: str) -> None:
        """Keep `warm` instances of a kind with room for a session, as far as the pool allows."""
        cfg = self._config.workers.get(kind)
        if cfg is None or self._stopping or self._http is None:
            return
        missing = cfg.placement.warm - len(self._spare(kind))
        while missing > 0 and (slot := self._free_slot(cfg)) is not None:
            self._launch(kind, cfg, slot)
            missing -= 1

    def _retire(self, inst: Instance) -> None:
        """Stop an instance in the background; its slot is free again once its processes are gone."""
        if inst.retiring:
            return
        inst.retiring = True

        async def retire() -> None:
            await inst.stop()
            with contextlib.suppress(ValueError):
                self._instances.remove(inst)
            self._notify()
            self._top_up(inst.kind)

        self._spawn(retire(), f"retire {inst.name}")
        self._top_up(inst.kind)

    def _spawn(self, coro, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_state(self, inst: Instance, old: State, new: State) -> None:
        self._notify()
        if self._stopping or inst.retiring:
            return
        if new is State.RUNNING and inst.replace_pending:
            inst.replace_pending = False
            if inst.sessions:
                self._spawn(self._replaced(list(inst.sessions)), f"replaced {inst.name}")
        elif new in TERMINAL:
            inst.replace_pending = False
            if inst.sessions:
                self._spawn(self._migrate(inst), f"migrate {inst.name}")
            self._top_up(inst.kind)

    async def _migrate(self, inst: Instance) -> None:
        """Move the sessions of a FATAL/EXITED worker elsewhere; report them all as replaced."""
        moved = dict(inst.sessions)
        inst.sessions.clear()
        for sid in moved:
            self._by_session.pop(sid, None)
        for sid, users in moved.items():
            try:
                await self.acquire(sid, inst.kind)
                self.update_load(sid, users)
            except NoWorkerAvailable as e:
                log.error("session %s lost its %s worker %s and none can take it: %s", sid, inst.kind,
                          inst.name, e)
        await self._replaced(list(moved))

    async def _replaced(self, session_ids: list[str]) -> None:
        log.info("sessions %s: worker replaced, members need new sfuData", session_ids)
        if self._on_replaced is None:
            return
        try:
            result = self._on_replaced(session_ids)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("on_worker_replaced(%s) failed", session_ids)

    def _retiring(self, kind: str) -> bool:
        return any(i.retiring for i in self._instances if i.kind == kind)

    def _decision(self, session_id: str, kind: str, inst: Instance | None, why: str) -> dict:
        """What placement saw and chose (the candidates as they were at that moment)."""
        return {"time": time.time(), "session_id": session_id, "kind": kind,
                "worker": inst.name if inst else None, "port": inst.port if inst else None, "reason": why,
                "candidates": [{"worker": i.name, "state": i.state.value, "sessions": len(i.sessions),
                                "users": sum(i.sessions.values()), "cpu_percent": round(i.cpu, 1)}
                               for i in self._instances if i.kind == kind]}

    def _record(self, d: dict) -> None:
        self._decisions.append(d)
        if d["worker"] is None:
            log.warning("session %s (%s) not placed: %s", d["session_id"], d["kind"], d["reason"])
        else:
            log.info("session %s (%s) placed on worker %s port %d: %s", d["session_id"], d["kind"],
                     d["worker"], d["port"], d["reason"])
