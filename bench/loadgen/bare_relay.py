"""The benchmark's baseline: the least a Python Socket.IO relay can do on the same stack.

A raw ASGI app on uvicorn (the orchestrator's own server stack) that answers the commands the
generator uses with canned acks and forwards every SendData frame pair to the registered
subscribers, with no validation, no model and no queues. Whatever the orchestrator costs above
this is the price of its logic, so the ratio survives a noisy machine.

By default every message goes through ASGI, as in any ASGI app. With `--direct` the relay takes
the transport shortcuts the orchestrator's data path takes (orchestrator/inbound.py, wire.py):
SendData is read from uvicorn's protocol as each message is parsed and the DataReceived frames,
framed once, are written straight to each subscriber's transport. Against the default relay the
ratio prices the orchestrator against a plain ASGI relay; against `--direct`, its logic alone.

    python -m bench.loadgen.bare_relay --host 127.0.0.1 --port 8090 [--direct]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
from collections import defaultdict

import uvicorn

from . import wire

PING_INTERVAL_S = 25
MAX_FRAME = 16 * 1024 * 1024
_ids = itertools.count(1)


class Conn:
    """One client: its user id, session and a lock that keeps each text+binary pair together."""

    def __init__(self, send) -> None:
        self.send, self.lock = send, asyncio.Lock()
        self.user_id = f"u{next(_ids)}"
        self.session: dict | None = None
        self.streams: list[tuple[str, str]] = []
        self.protocol = None  # uvicorn's protocol, with --direct
        self.waiting = 0  # pairs handed to ASGI because the transport was full; later ones queue behind
        self.later: set[asyncio.Future] = set()

    def write_pair(self, parts: tuple[bytes, ...], text: str, payload: bytes) -> None:
        """--direct: the framed pair straight to the transport, or through ASGI while it is full."""
        protocol = self.protocol
        if self.waiting or not protocol.writable.is_set() or protocol.close_sent \
                or protocol.transport.is_closing():
            self.waiting += 1
            task = asyncio.ensure_future(self._pair_later(text, payload))
            self.later.add(task)
            task.add_done_callback(self.later.discard)
        else:
            protocol.transport.writelines(parts)

    async def _pair_later(self, text: str, payload: bytes) -> None:
        try:
            with contextlib.suppress(Exception):
                await self.pair(text, payload)
        finally:
            self.waiting -= 1

    async def text(self, text: str) -> None:
        async with self.lock:
            await self.send({"type": "websocket.send", "text": text})

    async def pair(self, text: str, payload: bytes) -> None:
        async with self.lock:
            await self.send({"type": "websocket.send", "text": text})
            await self.send({"type": "websocket.send", "bytes": payload})


class Relay:
    """Users, sessions and subscriptions as plain dicts; enough to route, nothing more."""

    def __init__(self, direct: bool = False) -> None:
        self.direct = direct
        self.users: dict[str, Conn] = {}
        self.sessions: dict[str, dict] = {}
        self.subscribers: dict[tuple[str, str], list[Conn]] = defaultdict(list)
        self.headers: dict[tuple[str, str], str] = {}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        elif scope["type"] == "websocket":
            await self.serve(receive, send)

    async def serve(self, receive, send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        conn = Conn(send)
        self.users[conn.user_id] = conn
        if self.direct:
            self.take_data_as_parsed(conn, send.__self__)
        pinger = asyncio.create_task(self.ping(conn))
        stream = ""
        try:
            await conn.text(
                "0"
                + wire.dumps(
                    {
                        "sid": conn.user_id,
                        "upgrades": [],
                        "pingInterval": PING_INTERVAL_S * 1000,
                        "pingTimeout": 20000,
                        "maxPayload": MAX_FRAME,
                    }
                )
            )
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if text is None:
                    if stream:
                        await self.forward(conn, stream, message["bytes"])
                        stream = ""
                elif text.startswith('451-["SendData",'):
                    stream = wire.loads(wire.attachments(text)[1])[1]
                elif text.startswith("42"):
                    await self.handle(conn, *wire.split_ack_id(text, 2))
                elif text == wire.CONNECT:
                    await conn.text(f'40{{"sid":"{conn.user_id}"}}')
        finally:
            pinger.cancel()
            self.drop(conn)

    async def ping(self, conn: Conn) -> None:
        with contextlib.suppress(Exception):
            while True:
                await asyncio.sleep(PING_INTERVAL_S)
                await conn.text(wire.PING)

    async def forward(self, conn: Conn, stream: str, payload: bytes) -> None:
        key = (conn.user_id, stream)
        header = self.headers.get(key) or self.headers.setdefault(
            key, wire.binary_event("DataReceived", conn.user_id, stream)
        )
        for subscriber in self.subscribers.get(key, ()):
            with contextlib.suppress(Exception):
                await subscriber.pair(header, payload)

    def take_data_as_parsed(self, conn: Conn, protocol) -> None:
        """--direct: SendData pairs are forwarded from uvicorn's per-message hook; the rest goes to ASGI."""
        conn.protocol = protocol
        to_app = protocol.send_receive_event_to_app
        stream = ""

        def on_message() -> None:
            nonlocal stream
            frames = protocol.frames
            data = frames[0] if len(frames) == 1 else b"".join(frames)
            if protocol.curr_msg_data_type == "text":
                if data.startswith(b'451-["SendData",'):
                    stream = wire.loads(wire.attachments(data.decode())[1])[1]
                    protocol.frames = []
                    return
            elif stream:
                self.forward_now(conn, stream, data)
                stream = ""
                protocol.frames = []
                return
            to_app()

        protocol.send_receive_event_to_app = on_message

    def forward_now(self, conn: Conn, stream: str, payload: bytes) -> None:
        key = (conn.user_id, stream)
        header = self.headers.get(key) or self.headers.setdefault(
            key, wire.binary_event("DataReceived", conn.user_id, stream)
        )
        encoded = header.encode()
        parts = (wire.ws_frame_head(len(encoded), binary=False), encoded,
                 wire.ws_frame_head(len(payload), binary=True), payload)
        for subscriber in self.subscribers.get(key, ()):
            subscriber.write_pair(parts, header, payload)

    async def handle(self, conn: Conn, ack_id: str, body: str) -> None:
        name, *args = wire.loads(body)
        if name == "RegisterForDataStream":
            key = (args[0], args[1])
            self.subscribers[key].append(conn)
            conn.streams.append(key)
        elif ack_id:
            data = args[0] if args and isinstance(args[0], dict) else {}
            await conn.text(
                wire.ack(ack_id, {"error": 0, "message": "OK", "body": await self.command(conn, name, data)})
            )

    async def command(self, conn: Conn, name: str, data: dict) -> dict:
        """Canned answers, shaped like the orchestrator's, for the commands the generator sends."""
        if name == "Login":
            return {"userId": conn.user_id}
        if name == "AddSession":
            conn.session = {
                "sessionId": f"s{next(_ids)}",
                "sessionName": data.get("sessionName", ""),
                "sessionAdministrator": conn.user_id,
                "sessionUsers": [conn.user_id],
            }
            self.sessions[conn.session["sessionId"]] = conn.session
        elif name == "JoinSession":
            conn.session = self.sessions[data["sessionId"]]
            conn.session["sessionUsers"].append(conn.user_id)
        elif name == "SendMessage":
            target = self.users.get(data.get("userId"))
            if target is not None:
                await target.text(
                    wire.event(
                        "MessageSent",
                        {"messageFrom": conn.user_id, "messageFromName": "", "message": data.get("message")},
                    )
                )
            return {}
        elif name == "GetOrchestratorVersion":
            return {"orchestratorVersion": "bare-relay", "revision": ""}
        return (
            conn.session if name in ("AddSession", "JoinSession", "GetSessionInfo") and conn.session else {}
        )

    def drop(self, conn: Conn) -> None:
        self.users.pop(conn.user_id, None)
        for key in conn.streams:
            with contextlib.suppress(ValueError):
                self.subscribers[key].remove(conn)
        if conn.session is not None:
            with contextlib.suppress(ValueError):
                conn.session["sessionUsers"].remove(conn.user_id)
            if not conn.session["sessionUsers"]:
                self.sessions.pop(conn.session["sessionId"], None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--direct", action="store_true",
                        help="forward SendData from uvicorn's parser straight to the transports")
    args = parser.parse_args()
    uvicorn.run(
        Relay(direct=args.direct),
        host=args.host,
        port=args.port,
        lifespan="off",
        log_level="warning",
        access_log=False,
        ws_per_message_deflate=False,
        ws_max_size=MAX_FRAME,
        backlog=4096,
        ws="websockets-sansio",
    )


if __name__ == "__main__":
    main()
