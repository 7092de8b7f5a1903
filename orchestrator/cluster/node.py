"""One orchestrator process of a cluster: a full replica of the Model, kept by applying one shared,
totally ordered log of operations (a Redis stream) in order.

A state change is appended to the log (`execute`); every process, the originator included, reads
the log (XREAD BLOCK) and applies each entry with `App.apply_local`, which changes the local
replica and delivers the resulting events to the users connected here. The originator waits for
its own entry and answers its client with that entry's result or error: validation races (two
joins, join against leave, master election) are decided by log order on every process alike.
An entry whose client wants the events after the ack (LeaveSession) is applied by the waiting
command itself, so the ack goes first exactly as in a single process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from redis.exceptions import RedisError

from ..protocol import CommandError, Err
from ..settings import Settings
from ..streams_port import ClusterUnavailable
from . import codec
from .relay import Relay
from .snapshot import load_state, model_state
from .store import Store, connect

if TYPE_CHECKING:
    from ..server import App

log = logging.getLogger("orchestrator.cluster")

SNAPSHOT_EVERY = 1000  # log entries between snapshots ...
SNAPSHOT_HEARTBEATS = 10  # ... or this many heartbeat periods, whichever comes first
SNAPSHOTS_KEPT = 2
READ_BATCH = 1000
RETRY_MIN_S = 0.05


@dataclass(slots=True)
class Turn:
    """Handed to a waiting originator that applies its own entry (events after the ack)."""

    op: str
    args: dict[str, Any]
    done: asyncio.Future[tuple[bool, Any]]  # (applied by the originator, result or None)


@dataclass(slots=True)
class Waiter:
    future: asyncio.Future[Any]
    defer: bool
    # A join is acknowledged once the processes of the members already present delivered
    # USER_JOINED_SESSION (they confirm over pub/sub), so that it reaches them before the ack.
    confirm_from: set[str] = field(default_factory=set)
    confirmed: set[str] = field(default_factory=set)
    all_confirmed: asyncio.Event = field(default_factory=asyncio.Event)

    def check_confirmed(self) -> None:
        if self.confirm_from <= self.confirmed:
            self.all_confirmed.set()


@dataclass(slots=True)
class Counters:
    applied: int = 0
    snapshots: int = 0
    resyncs: int = 0
    reaped: list[str] = field(default_factory=list)


def redacted(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class RedisCluster:
    """ClusterPort on Redis: see the package docstring for what lives where."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.node_id = ""
        self.app: App | None = None
        self.store: Store | None = None
        self.relay: Relay | None = None
        self.epoch = ""
        self.applied: str | None = None  # last log id applied to the replica
        self.loaded_from = ""  # the snapshot the replica was last loaded from (or seeded with)
        self.ready = False
        self.counters = Counters()
        self._resync = False
        self._seq = 0
        self._waiters: dict[int, Waiter] = {}
        self._logging_in: set[str] = set()
        self._abandoned_sessions: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._since_snapshot = 0
        self._last_snapshot = time.monotonic()
        self._block_ms = max(50, int(min(1.0, settings.node_heartbeat_s) * 1000))
        self._retry_max_s = max(0.5, min(2.0, settings.node_heartbeat_s * 2))

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, app: App) -> None:
        self.app = app
        if not self.settings.state.startswith(("redis://", "rediss://", "unix://")):
            raise ClusterUnavailable(f"unsupported --state {redacted(self.settings.state)!r}: "
                                     "use memory or redis://HOST:PORT/DB")
        self.node_id = f"{socket.gethostname()}:{self.settings.port}/{uuid.uuid4().hex[:8]}"
        app.instance_id = self.node_id  # DumpData's id and every user's node
        timeout = max(self.settings.node_timeout_s, self._block_ms / 1000 + 1)
        self.store = Store(connect(self.settings.state, timeout))
        try:
            await self._sync()
        except (RedisError, OSError) as exc:
            await self.store.client.aclose()
            where = redacted(self.settings.state)
            raise ClusterUnavailable(f"state store {where} unavailable: {exc}") from None
        self.ready = True
        self.relay = Relay(app, self.store, self.node_id, self._retry_max_s, self._on_confirm)
        app.streams.on_replaced(self._worker_replaced)  # members on every process must be told
        self.relay.start()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._follow()), loop.create_task(self._heartbeat())]
        log.info("cluster node %s joined %s: state from snapshot %s plus %d log entries",
                 self.node_id, redacted(self.settings.state), self.loaded_from, self.counters.applied)

    async def stop(self) -> None:
        """Leave the cluster: anyone still logged in here is logged out everywhere (node_down)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.relay is not None:
            await self.relay.stop()
        if self.store is None:
            return
        if self.ready:
            with contextlib.suppress(RedisError, OSError):
                await self.store.append(self.epoch, codec.encode_entry(
                    "node_down", {"node": self.node_id}, self.node_id, 0))
                await self.store.leave(self.node_id)
        await self.store.client.aclose()

    def unready_reasons(self) -> list[str]:
        if not self.ready:
            return ["state store unavailable"]
        if self.relay is not None and not self.relay.subscribed:
            return ["data relay not subscribed"]
        return []

    # -- operations --------------------------------------------------------------------------

    async def execute(self, op: str, args: dict[str, Any], *, defer: bool = False) -> Any:
        if op == "logout":
            # A disconnect cannot be refused: if it does not reach the log now, the sweep after
            # the store is back logs the user out (it is no longer connected here).
            with contextlib.suppress(CommandError):
                return await self._execute(op, args, defer)
            return None
        return await self._execute(op, args, defer)

    async def _execute(self, op: str, args: dict[str, Any], defer: bool) -> Any:
        if not self.ready or self.store is None:
            raise CommandError(Err.STATE_UNAVAILABLE)
        self._seq += 1
        seq = self._seq
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters[seq] = waiter = Waiter(future, defer)
        login_id = args["user_id"] if op == "login" else None
        if login_id:
            self._logging_in.add(login_id)
        try:
            try:
                entry = codec.encode_entry(op, args, self.node_id, seq)
                entry_id = await self.store.append(self.epoch, entry)
            except (RedisError, OSError):
                raise CommandError(Err.STATE_UNAVAILABLE) from None
            if entry_id is None:  # the store lost the log this process follows
                self._resync = True
                raise CommandError(Err.STATE_UNAVAILABLE)
            try:
                async with asyncio.timeout(self.settings.node_timeout_s):
                    outcome = await future
            except TimeoutError:
                if op == "add_session":
                    self._abandoned_sessions.add(args["session_id"])
                raise CommandError(Err.STATE_UNAVAILABLE, "the change was not confirmed in time") from None
            except asyncio.CancelledError:
                if future.done() and not future.cancelled() and isinstance(future.result(), Turn):
                    future.result().done.set_result((False, None))
                raise
            if isinstance(outcome, Turn):
                return await self._take_turn(outcome)
            if waiter.confirm_from:
                with contextlib.suppress(TimeoutError):  # a process that died is not waited for
                    async with asyncio.timeout(self.settings.node_timeout_s):
                        await waiter.all_confirmed.wait()
            return outcome
        finally:
            self._waiters.pop(seq, None)
            if login_id:
                self._logging_in.discard(login_id)

    async def _take_turn(self, turn: Turn) -> Any:
        assert self.app is not None
        try:
            result = await self.app.apply_local(turn.op, turn.args, defer=True)
        except BaseException:
            turn.done.set_result((True, None))
            raise
        turn.done.set_result((True, result))
        return result

    def forward_data(self, recipients: list[str], sender_id: str, kind: str, payload: bytes | str) -> None:
        if self.relay is not None:
            self.relay.forward(recipients, sender_id, kind, payload)

    # -- following the log -------------------------------------------------------------------

    async def _follow(self) -> None:
        """Apply the log forever; when the store is lost, refuse changes and reconnect with backoff."""
        assert self.store is not None
        backoff = RETRY_MIN_S
        while True:
            try:
                if not self.ready:
                    await self._sync()
                    self.ready = True
                    backoff = RETRY_MIN_S
                    self.counters.resyncs += 1
                    log.warning("state store back: following the log from %s", self.applied)
                    self._sweep()
                entries = await self.store.read(self.applied or "0-0", READ_BATCH, self._block_ms)
                await self._apply_all(entries)
                if self._resync:
                    self._resync = False
                    self._lost("it lost the cluster state (restarted empty?)")
                elif entries:
                    await self._maybe_snapshot(len(entries))
            except (RedisError, OSError) as exc:
                self._lost(str(exc) or type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._retry_max_s)

    def _lost(self, reason: str) -> None:
        if self.ready:
            log.error("state store %s unavailable: %s; state changes refused (5012) until it is back",
                      redacted(self.settings.state), reason)
        self.ready = False

    async def _sync(self) -> None:
        """Bring the replica in line with the store: continue, load a snapshot, or seed the store."""
        assert self.store is not None
        meta = await self.store.meta()
        if meta and meta.get("epoch") == self.epoch and self.applied is not None and (
                self.applied == meta.get("base") or await self.store.has_entry(self.applied)):
            pass  # the log this replica follows is intact: continue from where it stopped
        elif not meta and await self._seed():
            pass
        else:
            joined = await self.store.join(self.node_id)
            if joined is None:  # emptied between the two calls
                raise RedisError("the state store was emptied during start-up")
            epoch, snap_id, fields = joined
            await self._load(codec.loads_packed(fields[b"j"], codec.fields_blobs(fields)), snap_id, epoch)
        while entries := await self.store.read(self.applied or "0-0", READ_BATCH, None):
            await self._apply_all(entries)
        await self.store.beat(self.epoch, self.node_id, self.applied or "0-0", self._timeout_ms)

    async def _seed(self) -> bool:
        """The store is empty: make this replica the cluster state (a new cluster, or Redis came back
        empty and this process is the first to reconnect). False if another process seeded first."""
        assert self.store is not None and self.app is not None
        model = self.app.model
        base, epoch = self.applied or "0-0", uuid.uuid4().hex
        text, blobs = codec.dumps_packed(model_state(model))
        nodes = sorted({u.node for u in model.users.values() if u.node} | {self.node_id})
        snapshot = {"j": text, **codec.blob_fields(blobs)}
        if not await self.store.seed(epoch, base, codec.next_id(base), nodes, snapshot):
            return False
        self.epoch, self.applied, self.loaded_from = epoch, base, base
        if base != "0-0":
            log.warning("state store was empty: re-seeded from this replica at %s (%d users, %d sessions)",
                        base, len(model.users), len(model.sessions))
        return True

    async def _load(self, state: dict[str, Any], snap_id: str, epoch: str) -> None:
        """Replace the replica by a snapshot; local clients whose user it lacks are disconnected."""
        assert self.app is not None
        before = set(self.app.model.sessions)
        load_state(self.app.model, state)
        self.epoch, self.applied, self.loaded_from = epoch, snap_id, snap_id
        for session_id in before - set(self.app.model.sessions):
            await self.app.streams.release(session_id)
        users = self.app.model.users
        self._drop_local(lambda uid: uid not in users)
        if before or self._tasks:
            log.warning("replica replaced by the snapshot at %s", snap_id)

    async def _apply_all(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        for entry_id, fields in entries:
            try:
                op, args, origin, seq = codec.decode_entry(fields)
            except (KeyError, ValueError, TypeError):
                log.error("log entry %s is malformed; skipped", entry_id)
            else:
                if op != "noop":
                    await self._apply(op, args, origin, seq)
            self.applied = entry_id.decode()
            self.counters.applied += 1

    async def _apply(self, op: str, args: dict[str, Any], origin: str, seq: int) -> None:
        assert self.app is not None
        waiter = self._waiters.get(seq) if seq and origin == self.node_id else None
        if waiter is not None and waiter.future.done():
            waiter = None  # its command gave up (timeout, disconnect)
        confirm = False
        if op == "join":
            nodes = self._member_nodes(args)
            if waiter is not None:
                waiter.confirm_from = nodes - {self.node_id}
                waiter.check_confirmed()
            confirm = origin != self.node_id and self.node_id in nodes
        if waiter is not None and waiter.defer:
            done: asyncio.Future[tuple[bool, Any]] = asyncio.get_running_loop().create_future()
            waiter.future.set_result(Turn(op, args, done))
            applied, result = await done
            if applied:
                self._after(op, args, origin, result)
                return
            waiter = None
        try:
            result = await self.app.apply_local(op, args, defer=False)
        except CommandError as exc:
            if waiter is not None:
                waiter.future.set_exception(exc)
            return
        except Exception as exc:
            log.exception("operation %s from %s failed", op, origin)
            if waiter is not None:
                waiter.future.set_exception(exc)
            return
        if waiter is not None:
            waiter.future.set_result(result)
        if confirm and self.relay is not None:
            self._spawn(self.relay.confirm(origin, seq))
        self._after(op, args, origin, result)

    def _member_nodes(self, args: dict[str, Any]) -> set[str]:
        """The processes of the members a join will tell (none if it is going to fail)."""
        assert self.app is not None
        model = self.app.model
        session = model.sessions.get(args.get("session_id"))  # type: ignore[arg-type]
        if session is None or args.get("user_id") in session.members:
            return set()
        return {model.users[uid].node for uid in session.members if uid in model.users}

    def _on_confirm(self, node: str, seq: int) -> None:
        waiter = self._waiters.get(seq)
        if waiter is not None:
            waiter.confirmed.add(node)
            waiter.check_confirmed()

    def _after(self, op: str, args: dict[str, Any], origin: str, result: Any) -> None:
        """Local consequences of an entry beyond the replica and its events."""
        if op == "node_down":
            gone = set(result or ())
            if args.get("node") == self.node_id and origin != self.node_id:
                log.error("this process was declared down (silent longer than node_timeout_s): "
                          "its %d user(s) were logged out; disconnecting them", len(gone))
                self._drop_local(gone.__contains__)
            elif gone:
                log.warning("process %s is gone: %d user(s) logged out", args.get("node"), len(gone))
        elif op == "set_worker" and result:
            self._spawn(self.app.worker_replaced([args["session_id"]]))  # to the members connected here
        elif op == "reset" and origin != self.node_id:
            self._drop_local(lambda uid: True)
        elif op == "add_session" and args.get("session_id") in self._abandoned_sessions:
            self._abandoned_sessions.discard(args["session_id"])
            self._spawn(self._execute("close_session", {"session_id": args["session_id"]}, False))

    async def _worker_replaced(self, session_ids: list[str]) -> None:
        """A worker this process owns was restarted or replaced: its sessions' new description goes
        through the log, and each process tells its own members (STREAM_WORKER_CHANGED)."""
        assert self.app is not None
        describe = getattr(getattr(self.app.streams, "supervisor", None), "describe", None)
        for session_id in session_ids:
            session = self.app.model.sessions.get(session_id)
            if session is None:
                continue
            worker = describe(session_id) if describe is not None else session.worker
            try:
                await self._execute("set_worker", {"session_id": session_id, "worker": worker}, False)
            except CommandError:
                await self.app.worker_replaced([session_id])  # the store is away: tell those here at least

    # -- local connections -------------------------------------------------------------------

    def _drop_local(self, gone: Any) -> None:
        """Disconnect the local clients whose user no longer exists in the cluster state."""
        assert self.app is not None
        for conn in list(self.app.conns.values()):
            if conn.user_id is not None and gone(conn.user_id):
                self.app.delivery.detach(conn.user_id)
                conn.user_id = None
                self._spawn(self.app.delivery.disconnect(conn.sid))

    def _sweep(self) -> None:
        """Users of this node without a connection here (gone while the store was unreachable, or a
        login that was not confirmed in time) are logged out."""
        assert self.app is not None
        claimed = {conn.user_id for conn in self.app.conns.values()} | self._logging_in
        for user in list(self.app.model.users.values()):
            if user.node == self.node_id and user.user_id not in claimed:
                self._spawn(self.execute("logout", {"user_id": user.user_id}))

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        task.add_done_callback(_quiet)

    # -- heartbeats and snapshots --------------------------------------------------------------

    @property
    def _timeout_ms(self) -> int:
        return int(self.settings.node_timeout_s * 1000)

    async def _heartbeat(self) -> None:
        assert self.store is not None
        sweep_every = max(1, round(self.settings.node_timeout_s / self.settings.node_heartbeat_s))
        beats = 0
        while True:
            await asyncio.sleep(self.settings.node_heartbeat_s)
            if not self.ready:
                continue
            try:
                reaped = await self.store.beat(self.epoch, self.node_id, self.applied or "0-0",
                                               self._timeout_ms)
            except (RedisError, OSError):
                continue  # the log follower notices and reconnects
            if reaped is None:
                self._resync = True
                continue
            for node in reaped:
                self.counters.reaped.append(node)
                log.warning("process %s silent for more than %.1f s: declared down", node,
                            self.settings.node_timeout_s)
            beats += 1
            if beats % sweep_every == 0:
                self._sweep()

    async def _maybe_snapshot(self, applied: int) -> None:
        """Every SNAPSHOT_EVERY entries or SNAPSHOT_HEARTBEATS periods, one process (whoever takes
        the turn) stores the replica; the log is trimmed below the oldest snapshot kept."""
        assert self.store is not None and self.app is not None
        self._since_snapshot += applied
        period = SNAPSHOT_HEARTBEATS * self.settings.node_heartbeat_s
        now = time.monotonic()
        if self._since_snapshot < SNAPSHOT_EVERY and now - self._last_snapshot < period:
            return
        self._since_snapshot, self._last_snapshot = 0, now
        if not await self.store.take_snapshot_turn(self.node_id, int(period * 1000)):
            return
        snap_id = self.applied or "0-0"  # the reader is between entries: replica and id agree
        text, blobs = codec.dumps_packed(model_state(self.app.model))
        snapshot = {"j": text, **codec.blob_fields(blobs)}
        if await self.store.save(self.epoch, snap_id, SNAPSHOTS_KEPT, snapshot):
            self.counters.snapshots += 1
            log.debug("snapshot at %s stored", snap_id)


def _quiet(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        if not isinstance(exc, CommandError | RedisError | OSError):
            log.error("cluster background work failed: %r", exc)
