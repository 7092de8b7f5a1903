"""A raw client that speaks exactly the frames the Unity client (SocketIOClient 3.0.8) sends."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import websockets


@dataclass
class RawClient:
    """Engine.IO v4 / Socket.IO v5 over one WebSocket, frame by frame, like SocketIOClient 3.0.8."""

    ws: Any
    next_id: int = 0
    inbox: list[Any] = field(default_factory=list)  # events received while waiting for something else

    @classmethod
    async def connect(cls, url: str, max_queue: int = 16) -> RawClient:
        """`max_queue`: messages the client library buffers before it stops reading the socket."""
        ws = await websockets.connect(url, max_size=None, compression=None, max_queue=max_queue)
        opening = await ws.recv()
        assert opening.startswith("0"), opening
        info = json.loads(opening[1:])
        assert {"sid", "upgrades", "pingInterval", "pingTimeout"} <= info.keys()
        await ws.send("40")
        connected = await ws.recv()
        assert connected.startswith("40"), connected
        return cls(ws)

    async def recv_frame(self, timeout: float = 5) -> str | bytes:
        while True:
            frame = await asyncio.wait_for(self.ws.recv(), timeout)
            if frame == "2":  # Engine.IO ping
                await self.ws.send("3")
                continue
            return frame

    async def command(self, name: str, data: Any, timeout: float = 5) -> Any:
        ack_id = self.next_id
        self.next_id += 1
        await self.ws.send(f"42{ack_id}" + json.dumps([name, data]))
        return await self.wait_ack(ack_id, timeout)

    async def wait_ack(self, ack_id: int, timeout: float = 5) -> Any:
        prefix = f"43{ack_id}["
        while True:
            frame = await self.recv_frame(timeout)
            if isinstance(frame, str) and frame.startswith(prefix):
                return json.loads(frame[len(prefix) - 1:])[0]
            self.inbox.append(frame)

    async def send_binary_event(self, name: str, *args: Any, payload: bytes, ack: bool = False) -> int | None:
        ack_id = None
        if ack:
            ack_id = self.next_id
            self.next_id += 1
        placeholder = {"_placeholder": True, "num": 0}
        head = f"451-{ack_id if ack_id is not None else ''}" + json.dumps([name, *args, placeholder])
        await self.ws.send(head)
        await self.ws.send(payload)
        return ack_id

    async def next_event(self, timeout: float = 5) -> tuple[str, list[Any]]:
        """The next Socket.IO event, binary attachments put back in place of their placeholders."""
        while True:
            frame = self.inbox.pop(0) if self.inbox else await self.recv_frame(timeout)
            if isinstance(frame, bytes):
                raise AssertionError("unexpected binary frame")
            if frame.startswith("42"):
                data = json.loads(frame[2:])
                return data[0], data[1:]
            if frame.startswith("45"):
                count, _, rest = frame[2:].partition("-")
                data = json.loads(rest)
                attachments = [await self.recv_frame(timeout) for _ in range(int(count))]
                return data[0], [_fill(arg, attachments) for arg in data[1:]]

    async def close(self) -> None:
        await self.ws.close()


def _fill(value: Any, attachments: list[Any]) -> Any:
    if isinstance(value, dict):
        if value.get("_placeholder") is True:
            return attachments[value["num"]]
        return {k: _fill(v, attachments) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, attachments) for v in value]
    return value


