"""The orchestrator application: Socket.IO server, connections, command dispatch, ASGI routing.

Events of one client are handled inline, in arrival order (`async_handlers=False`): a client's
SendData frames and scene events never overtake each other, while each client's connection has
its own reader task, so unrelated clients are not serialised behind one another.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import inspect
import ipaddress
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import socketio

from . import handlers
from .asgi import Receive, Scope, Send
from .clock import NtpClock
from .delivery import Delivery
from .handlers import COMMANDS, EVENTS, CommandSpec, Context, EventFn
from .handlers.streams import OK_EMPTY
from .http import admin, probes
from .http.metrics import metrics, registry_for
from .http.responses import respond_json
from .limits import AbuseCounter, TokenBucket
from .logs import CONTEXT
from .logtail import LogTail
from .loopwatch import LoopWatch
from .model import Model, Outcome, Session, User
from .ops import OPS
from .protocol import CommandError, Err, Ev, SessionEvent, envelope
from .settings import Settings
from .stats import Stats
from .streams_port import (
    ClusterPort,
    ClusterUnavailable,
    NoStreams,
    StreamsPort,
    WorkerUnavailable,
    render_remote_sfu_data,
)

log = logging.getLogger("orchestrator")

Handler = Callable[..., Awaitable[dict[str, Any] | None]]
Route = Callable[["App", Scope, Receive, Send], Awaitable[None]]


@dataclass(slots=True)
class Conn:
    """One Socket.IO connection; it becomes a user at Login (every connection is its own user)."""

    sid: str
    peer: str
    host: str
    token: str | None
    commands: TokenBucket
    data: TokenBucket
    abuse: AbuseCounter
    user_id: str | None = None

    def require_user(self) -> str:
        if self.user_id is None:
            raise CommandError(Err.NOT_LOGGED_IN)
        return self.user_id


def run_now(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """The result of a coroutine that finishes without suspending (a handler with nothing to await)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("a handler run on the read path suspended")


def host_without_port(host_header: str) -> str:
    """`example.org:8090` → `example.org`; `[::1]:8090` → `::1` (URLs are bracketed when rendered)."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    if host_header.count(":") == 1:
        return host_header.split(":", 1)[0]
    return host_header


class App:
    def __init__(self, settings: Settings, streams: StreamsPort | None = None) -> None:
        self.settings = settings
        self.instance_id = str(uuid.uuid4())
        self.sio = socketio.AsyncServer(
            async_mode="asgi",
            async_handlers=False,
            max_http_buffer_size=settings.max_http_buffer_size,
            cors_allowed_origins=settings.cors_origins if settings.cors_origins != ["*"] else "*",
            ping_interval=settings.ping_interval_s,
            ping_timeout=settings.ping_timeout_s,
            http_compression=False,
            logger=False,
            engineio_logger=False,
        )
        self.stats = Stats()
        self.delivery = Delivery(self.sio, settings, self.stats)
        self.delivery.on_malformed = self.malformed
        decode_and_dispatch = self.sio.eio.handlers["message"]

        async def on_message(eio_sid: str, data: Any) -> None:
            try:
                await decode_and_dispatch(eio_sid, data)
            except ValueError as exc:  # a packet Socket.IO cannot decode; handlers never raise
                self.malformed(eio_sid, exc)
        self.sio.eio.on("message", on_message)
        self.streams: StreamsPort = streams or NoStreams()
        self.streams.on_replaced(self.worker_replaced)
        self.model = Model(sfu_data=self._sfu_data)
        self.clock = NtpClock(settings.ntp_servers, timeout_s=settings.ntp_timeout_s,
                              refresh_s=settings.ntp_refresh_s)
        self.conns: dict[str, Conn] = {}
        self.cluster: ClusterPort | None = None  # set when several processes share the state
        self.draining = False
        self._sessions_gone = asyncio.Event()  # set while draining once the last session closed
        self._shut_down = False
        self.exit_code = 0
        self.stop_requested: Callable[[], None] = lambda: None  # set by whoever runs the server
        self.loopwatch = LoopWatch()
        self.logtail = LogTail()
        self.metrics_registry = registry_for(self)
        self.routes: dict[str, Route] = {"/livez": probes.livez, "/readyz": probes.readyz,
                                         "/metrics": metrics}
        self._trusted = settings.trusted()
        self._engineio_app = socketio.ASGIApp(self.sio, socketio_path="socket.io")
        self._register_handlers()

    # -- ASGI --------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
        elif scope["path"].startswith("/socket.io"):
            await self._engineio_app(scope, receive, send)
        elif scope["path"] == "/admin" or scope["path"].startswith("/admin/"):
            await admin.handle(self, scope, receive, send)
        elif kind == "http" and scope["path"] in self.routes:
            await self.routes[scope["path"]](self, scope, receive, send)
        elif kind == "http":
            await respond_json(send, 404, {"error": "not found"})
        else:
            await send({"type": "websocket.close", "code": 1008})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except ClusterUnavailable as exc:
                    log.error("start-up failed: %s", exc)  # an operator's problem, not a bug: one line
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                except Exception as exc:
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        self.clock.start()
        self.loopwatch.start()
        if self.cluster is not None:
            await self.cluster.start(self)
        await self.streams.start()
        # Long-lived objects created so far never need collecting again; with thousands of
        # clients the default thresholds make full collections stall the loop for a second.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)

    async def shutdown(self) -> None:
        if self._shut_down:
            return
        self._shut_down = True
        for sid in list(self.conns):
            await self.delivery.disconnect(sid)
        await self.streams.stop()
        if self.cluster is not None:
            await self.cluster.stop()
        await self.clock.stop()
        await self.loopwatch.stop()
        log.info("orchestrator stopped")

    def _local_sessions(self) -> list[Session]:
        """Sessions with a user connected to this process (all of them, unless in a cluster)."""
        local = self.delivery.queue_of
        return [s for s in self.model.sessions.values()
                if local(s.admin_id) is not None or any(local(uid) is not None for uid in s.members)]

    async def drain(self) -> None:
        """Refuse new logins and sessions, tell live sessions, wait for them to end (bounded)."""
        self.draining = True
        grace = self.settings.drain_grace_s
        members = [uid for s in self._local_sessions() for uid in s.members]
        event = {"eventId": SessionEvent.ORCHESTRATOR_DRAINING, "eventData": {"graceSeconds": grace}}
        self.delivery.send(members, Ev.SESSION_UPDATED, (event,))
        if self._local_sessions():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sessions_gone.wait(), grace)
        if open_sessions := self._local_sessions():
            log.warning("drain grace over with %d session(s) still open", len(open_sessions))
        else:
            log.info("drained: no sessions left")

    # -- connections -------------------------------------------------------------------------

    def _register_handlers(self) -> None:
        handlers.load_all()
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        for name, spec in COMMANDS.items():
            self.sio.on(name, self._command_handler(name, spec))
        for name, fn in EVENTS.items():
            self.sio.on(name, self._event_handler(name, fn))
        self.sio.on("*", self._on_unknown)

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        scope = environ.get("asgi.scope", {})
        client = scope.get("client") or ("", 0)
        server = scope.get("server") or ("127.0.0.1", 0)
        host = host_without_port(environ.get("HTTP_HOST", "")) or str(server[0])
        token = None
        if isinstance(auth, dict):
            candidate = auth.get("token", auth.get("operatorToken"))
            token = candidate if isinstance(candidate, str) else None
        settings = self.settings
        if len(self.conns) >= settings.max_connections:
            self.stats.rejected["connection_cap"] += 1
            log.warning("connection from %s refused: %d connections (max_connections)", client[0],
                        len(self.conns))
            return False
        self.conns[sid] = Conn(
            sid=sid, peer=str(client[0]), host=host, token=token,
            commands=TokenBucket(settings.command_rate, settings.command_burst),
            data=TokenBucket(settings.data_rate_bytes, settings.data_burst_bytes),
            abuse=AbuseCounter(settings.abuse_limit, settings.abuse_window_s),
        )
        self.stats.connections_total += 1
        return True

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        conn = self.conns.pop(sid, None)
        self.delivery.release_poll(sid)
        if conn is not None and conn.user_id is not None:
            await self.logout(conn)

    def is_operator(self, conn: Conn, data: dict[str, Any]) -> bool:
        return self.operator_allowed(conn.peer, conn.token or data.get("operatorToken"))

    def operator_allowed(self, peer: str, supplied: Any) -> bool:
        """A configured token must match (constant time); without one, trusted networks only."""
        expected = self.settings.operator_token
        if expected:
            return isinstance(supplied, str) and hmac.compare_digest(supplied.encode(), expected.encode())
        try:
            address = ipaddress.ip_address(peer.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self._trusted)

    # -- dispatch ----------------------------------------------------------------------------

    def _command_handler(self, name: str, spec: CommandSpec) -> Handler:
        async def handle(sid: str, *args: Any) -> dict[str, Any] | None:
            conn = self.conns.get(sid)
            if conn is None:
                return None
            data = args[0] if args else {}
            command_id = data.get("commandId") if isinstance(data, dict) else None
            ctx: Context | None = None
            context_token = CONTEXT.set(self._log_context(conn))
            try:
                if not conn.commands.take():
                    raise CommandError(Err.RATE_LIMITED)
                if not isinstance(data, dict):
                    raise CommandError(Err.INVALID_REQUEST, "the command's argument must be a JSON object")
                if spec.operator and not self.is_operator(conn, data):
                    raise CommandError(Err.UNAUTHORIZED, "operator rights required")
                ctx = Context(self, conn, data)
                if spec.login:
                    ctx.user_id  # noqa: B018 (raises NOT_LOGGED_IN)
                reply = envelope(Err.OK, await spec.fn(ctx), command_id=command_id)
                code = Err.OK
            except CommandError as exc:
                code = exc.code
                reply = envelope(exc.code, detail=exc.detail, command_id=command_id)
                self.refused(conn, name, exc)
            except Exception:
                log.exception("command %s from %s failed", name, conn.user_id or conn.sid)
                code = Err.INTERNAL_ERROR
                reply = envelope(Err.INTERNAL_ERROR, command_id=command_id)
            finally:
                CONTEXT.reset(context_token)
            self.stats.commands[(name, int(code))] += 1
            if ctx is not None and ctx.after_ack:
                loop = asyncio.get_running_loop()
                for work in ctx.after_ack:
                    loop.call_soon(work)
            return reply
        return handle

    def _event_handler(self, name: str, fn: EventFn) -> Handler:
        """The Socket.IO handler of an event. A synchronous `fn` never suspends it, so it is also
        offered to the WebSocket read path (`Delivery.fast_events`), which runs it as soon as the
        event is parsed."""
        events_in = self.stats.events_in
        rejected = self.stats.rejected
        metered = name != Ev.SEND_DATA  # SendData is metered in bytes by its handler

        awaited = inspect.iscoroutinefunction(fn)

        async def handle(sid: str, *args: Any) -> dict[str, Any] | None:
            conn = self.conns.get(sid)
            if conn is None:
                return None
            events_in[name] += 1
            try:
                if metered and not conn.commands.take():
                    raise CommandError(Err.RATE_LIMITED)
                body = fn(self, conn, args)
                if awaited:
                    body = await body  # type: ignore[misc]
            except CommandError as exc:
                rejected[f"{name}:{int(exc.code)}"] += 1
                self.refused(conn, name, exc)
                return envelope(exc.code, detail=exc.detail)
            except Exception:
                log.exception("event %s from %s failed", name, conn.user_id or sid)
                return envelope(Err.INTERNAL_ERROR)
            return body if body is OK_EMPTY else envelope(Err.OK, body)

        if not awaited:
            self.delivery.fast_events[name] = lambda sid, args: run_now(handle(sid, *args))
        return handle

    def _log_context(self, conn: Conn) -> tuple[str | None, str | None]:
        user = self.model.users.get(conn.user_id) if conn.user_id else None
        return (conn.user_id, user.session_id if user else None)

    async def _on_unknown(self, event: Any, sid: str, *args: Any) -> dict[str, Any]:
        self.stats.rejected["unknown_event"] += 1
        log.debug("unknown event %.64r from %s ignored", event, sid)
        command_id = args[0].get("commandId") if args and isinstance(args[0], dict) else None
        return envelope(Err.UNKNOWN_COMMAND, detail=str(event)[:64], command_id=command_id)

    def refused(self, conn: Conn, name: str, exc: CommandError) -> None:
        """Count a refused input; a client refused too often in a short time is cut off."""
        log.debug("%s from %s refused: %d %s", name, conn.user_id or conn.sid, exc.code, exc)
        if exc.code == Err.RATE_LIMITED:
            self.stats.rejected[f"rate_limited:{name}"] += 1
        if conn.abuse.hit():
            log.warning("disconnecting %s (%s): %d refused inputs within %.0f s, last %s (%d)",
                        conn.user_id or conn.sid, conn.peer, conn.abuse.limit, conn.abuse.window_s,
                        name, exc.code)
            self.stats.rejected["abuse_disconnect"] += 1
            asyncio.get_running_loop().create_task(self.delivery.disconnect(conn.sid))

    def malformed(self, eio_sid: str, exc: Exception) -> None:
        """A packet Engine.IO or Socket.IO could not decode: a refused input like any other (counted,
        logged at debug level, towards the abuse limit), not a traceback in the log for each one."""
        self.stats.rejected["malformed_packet"] += 1
        sid = self.sio.manager.sid_from_eio_sid(eio_sid, "/")
        conn = self.conns.get(sid) if sid else None
        if conn is not None:
            self.refused(conn, "packet", CommandError(Err.INVALID_REQUEST, f"malformed: {str(exc)[:80]}"))
        else:
            log.debug("malformed packet from %s: %s", eio_sid, exc)

    def log_refusal(self, ctx: Context, exc: CommandError) -> None:
        log.debug("command from %s refused: %s", ctx.conn.user_id or ctx.conn.sid, exc)

    # -- operations the handlers share -------------------------------------------------------

    def check_accepting(self) -> None:
        if self.draining:
            raise CommandError(Err.DRAINING)

    async def apply(self, op: str, *, defer: bool = False, **args: Any) -> Any:
        """Run one state change (ops.py) and settle what it caused; `defer` delivers after the ack.

        In a cluster the operation goes through the shared log and every process applies it."""
        if self.cluster is not None:
            return await self.cluster.execute(op, args, defer=defer)
        return await self.apply_local(op, args, defer=defer)

    async def apply_local(self, op: str, args: dict[str, Any], *, defer: bool = False) -> Any:
        result, outcome = OPS[op](self.model, **args)
        await self.settle(outcome, defer=defer)
        return result

    async def login(self, conn: Conn, name: str) -> str:
        if conn.user_id is not None and conn.user_id in self.model.users:
            return conn.user_id  # a repeated Login on one connection keeps its user
        user_id = str(uuid.uuid4())
        await self.apply("login", user_id=user_id, name=name, host=conn.host, node=self.instance_id)
        conn.user_id = user_id
        self.delivery.attach(user_id, conn.sid)
        return user_id

    async def logout(self, conn: Conn) -> None:
        user_id = conn.user_id
        if user_id is None:
            return
        conn.user_id = None
        self.delivery.detach(user_id)
        await self.apply("logout", user_id=user_id)

    async def add_session(self, conn: Conn, **fields: Any) -> Session:
        user = self.model.user(conn.require_user())
        if user.session_id is not None:
            raise CommandError(Err.ALREADY_IN_OTHER_SESSION)
        if len(self.model.sessions) >= self.settings.max_sessions:
            raise CommandError(Err.LIMIT_REACHED, f"{self.settings.max_sessions} sessions (max_sessions)")
        session_id = str(uuid.uuid4())
        try:
            worker = await self.streams.acquire(session_id, fields["protocol"])
        except WorkerUnavailable as exc:
            log.warning("session %r refused: %s", fields["name"], exc)
            raise CommandError(Err.NO_WORKER_AVAILABLE, str(exc)) from None
        try:
            await self.apply("add_session", user_id=user.user_id, session_id=session_id,
                             max_sessions=self.settings.max_sessions, worker=worker, **fields)
        except BaseException:
            await self.streams.release(session_id)
            raise
        session = self.model.sessions[session_id]
        log.info("session %s %r (%s) created by %s", session_id, session.name, session.protocol, user.user_id)
        return session

    async def settle(self, outcome: Outcome, *, defer: bool = False) -> None:
        """Deliver what a state change caused, update worker loads, give closed sessions' workers back."""
        if defer and outcome.notes:
            asyncio.get_running_loop().call_soon(self.delivery.deliver, outcome.notes)
        else:
            self.delivery.deliver(outcome.notes)
        for session_id in outcome.changed_sessions:
            session = self.model.sessions.get(session_id)
            if session is not None:
                self.streams.update_load(session_id, len(session.members))
        for session_id in outcome.closed_sessions:
            log.info("session %s closed", session_id)
            await self.streams.release(session_id)
        if self.draining and not self._local_sessions():
            self._sessions_gone.set()

    def stream_ack_body(self, user: User) -> dict[str, Any]:
        body = self.model.stream_info(user)
        session = self.model.sessions.get(user.session_id) if user.session_id else None
        body["sfuData"] = self._sfu_data(session, user) if session else {}
        return body

    def _sfu_data(self, session: Session, user: User) -> dict[str, str]:
        data = self.streams.sfu_data(session.session_id, user.user_id, user.host)
        if not data["url_gen"] and session.worker is not None:
            # The worker belongs to another orchestrator process of the cluster.
            data = render_remote_sfu_data(session.worker, session.session_id, user)
        return data

    def dump(self) -> dict[str, Any]:
        dump = {"id": self.instance_id, **self.model.dump(), "workers": self.streams.snapshot()}
        for entry in dump["users"]:
            entry["node"] = self.model.users[entry["userId"]].node  # the process each user is on
        return dump

    def unready_reasons(self) -> list[str]:
        reasons = []
        if self.draining:
            reasons.append("draining")
        reasons.extend(self.streams.unready_reasons())
        if self.cluster is not None:
            reasons.extend(self.cluster.unready_reasons())
        return reasons

    async def close_session(self, session_id: str) -> bool:
        """Operator action: close a session as if its administrator had gone."""
        closed = await self.apply("close_session", session_id=session_id)
        if closed:
            log.warning("operator closed session %s", session_id)
        return bool(closed)

    def admin_state(self) -> dict[str, Any]:
        """Everything the operator page shows, in one JSON-ready object."""
        model = self.model
        return {
            "id": self.instance_id,
            "draining": self.draining,
            "connections": len(self.conns),
            "sessions": [
                {**model.session_dict(s, with_definitions=False),
                 "sessionUserNames": [model.users[uid].name for uid in s.members],
                 "streams": {uid: sorted(model.users[uid].streams) for uid in s.members}}
                for s in model.sessions.values()
            ],
            "users": [{"userId": u.user_id, "userName": u.name, "sessionId": u.session_id,
                       "streams": sorted(u.streams), "subscriptions": sorted(u.subscriptions)}
                      for u in model.users.values()],
            "workers": self.streams.snapshot().get("workers", []),
            "stats": {"dataFramesIn": self.stats.data_frames_in, "dataFramesOut": self.stats.data_frames_out,
                      "dataDropped": dict(self.stats.data_dropped), "rejected": dict(self.stats.rejected),
                      "eventLoopLagSeconds": self.loopwatch.lag_s},
        }

    async def worker_replaced(self, session_ids: list[str]) -> None:
        """A session's worker was restarted or replaced: its members get their new sfuData."""
        for session_id in session_ids:
            session = self.model.sessions.get(session_id)
            if session is None:
                continue
            users = {uid: self._sfu_data(session, self.model.users[uid]) for uid in session.members}
            event = {"eventId": SessionEvent.STREAM_WORKER_CHANGED,
                     "eventData": {"sessionId": session_id, "reason": "worker restarted or replaced",
                                   "users": users}}
            self.delivery.send(session.members, Ev.SESSION_UPDATED, (event,))
            log.warning("session %s: stream worker replaced, %d member(s) told", session_id, len(users))

    def schedule_reset(self) -> None:
        asyncio.get_running_loop().create_task(self.reset())

    async def reset(self) -> None:
        log.warning("operator reset: closing every session and disconnecting every client")
        await self.apply("reset")
        for conn in self.conns.values():
            if conn.user_id is not None:
                self.delivery.detach(conn.user_id)
                conn.user_id = None
        await asyncio.sleep(0)  # let the SessionClosed notes reach the writers before the close
        for sid in list(self.conns):
            await self.delivery.disconnect(sid)

    def schedule_terminate(self) -> None:
        log.warning("operator requested termination")
        self.exit_code = 0
        self.stop_requested()
