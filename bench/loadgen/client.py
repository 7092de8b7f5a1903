"""One raw Socket.IO connection, opened exactly the way the Unity client opens it.

No python-socketio client here: its per-packet machinery would make the generator, not the
server, the bottleneck. Data frames are never JSON-decoded; the text half of `DataReceived` is
recognised by its prefix and the binary half goes straight to a callback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from urllib.parse import urlsplit

import aiohttp

from . import wire

DATA_PREFIX = '451-["DataReceived"'
MAX_FRAME = 64 * 1024 * 1024


class AckError(Exception):
    """A command was answered with a non-zero error code or a malformed ack."""


def websocket_url(server_url: str) -> str:
    """`http://h:p` (or `ws://h:p`) → the Unity client's WebSocket-only Engine.IO URL."""
    parts = urlsplit(server_url)
    scheme = "wss" if parts.scheme in ("https", "wss") else "ws"
    return f"{scheme}://{parts.netloc}/socket.io/?EIO=4&transport=websocket"


class Client:
    """A logged-in-able Socket.IO v5 client with acked commands and a fast data path.

    on_data(frame) receives the bytes of every DataReceived; on_event(name, args) every other
    event; on_close() is called once when the connection ends for any reason.
    """

    def __init__(
        self,
        http: aiohttp.ClientSession,
        url: str,
        on_data: Callable[[bytes], None] | None = None,
        on_event: Callable[[str, list], None] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._http, self._url = http, websocket_url(url)
        self._on_data, self._on_event, self._on_close = on_data, on_event, on_close
        self._acks: dict[int, asyncio.Future] = {}
        self._next_id = 0
        self._reader: asyncio.Task | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.user_id = ""
        self.protocol_errors = 0

    async def open(self) -> None:
        """WebSocket, Engine.IO open packet, bare `40`, Socket.IO connect ack."""
        self.ws = await self._http.ws_connect(self._url, compress=0, max_msg_size=MAX_FRAME, autoping=True)
        opening = await self.ws.receive_str()
        if not opening.startswith("0{") or '"sid"' not in opening:
            raise ConnectionError(f"bad Engine.IO open packet {opening[:80]!r}")
        await self.ws.send_str(wire.CONNECT)
        connected = await self.ws.receive_str()
        if not connected.startswith("40"):
            raise ConnectionError(f"bad Socket.IO connect reply {connected[:80]!r}")
        self._reader = asyncio.create_task(self._read())

    async def login(self, name: str) -> str:
        self.user_id = (await self.call("Login", {"userName": name}))["userId"]
        return self.user_id

    async def call(self, name: str, data: dict, timeout: float = 30.0) -> dict:
        """Send an acked command; return the ack body, or raise AckError / TimeoutError."""
        self._next_id += 1
        ack_id = self._next_id
        future = self._acks[ack_id] = asyncio.get_running_loop().create_future()
        try:
            await self.ws.send_str(wire.event(name, data, ack_id=ack_id))
            async with asyncio.timeout(timeout):
                args = await future
        finally:
            self._acks.pop(ack_id, None)
        reply = args[0] if args else None
        if not isinstance(reply, dict) or reply.get("error") != 0 or not isinstance(reply.get("body"), dict):
            raise AckError(f"{name}: {str(reply)[:200]}")
        return reply["body"]

    async def emit(self, name: str, *args: object) -> None:
        await self.ws.send_str(wire.event(name, *args))

    async def send_binary(self, header: str, payload: bytes) -> None:
        """A binary event: its `451-` text half (see wire.binary_event), then the attachment."""
        await self.ws.send_str(header)
        await self.ws.send_bytes(payload)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await self._reader

    async def _read(self) -> None:
        ws, binary_left, binary_is_data = self.ws, 0, False
        try:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.BINARY:
                    if binary_left == 0:
                        self.protocol_errors += 1
                        continue
                    binary_left -= 1
                    if binary_is_data and self._on_data is not None:
                        self._on_data(msg.data)
                    continue
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                text = msg.data
                if text == wire.PING:
                    await ws.send_str(wire.PONG)
                elif text.startswith(DATA_PREFIX):
                    binary_left, binary_is_data = 1, True
                elif text.startswith("43"):
                    self._resolve(text)
                elif text.startswith("42"):
                    self._dispatch(wire.split_ack_id(text, 2)[1])
                elif text.startswith("45"):
                    binary_left, _ = wire.attachments(text)
                    binary_is_data = False
                elif text.startswith("41"):
                    break
        finally:
            for future in self._acks.values():
                if not future.done():
                    future.set_exception(ConnectionError("connection closed before the ack"))
            if self._on_close is not None:
                self._on_close()

    def _resolve(self, text: str) -> None:
        ack_id, body = wire.split_ack_id(text, 2)
        future = self._acks.get(int(ack_id or -1))
        if future is None or future.done():
            self.protocol_errors += 1
        else:
            future.set_result(wire.loads(body))

    def _dispatch(self, body: str) -> None:
        packet = wire.loads(body)
        if self._on_event is not None and isinstance(packet, list) and packet:
            self._on_event(packet[0], packet[1:])
