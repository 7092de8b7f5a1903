"""Handling hot binary events as uvicorn parses them, without a round trip through ASGI.

A `SendData` arrives as two WebSocket messages: the text `451-[ackId]["SendData",kind,{placeholder}]`
and then its binary payload. Through ASGI each message costs a queue put, a pause and a resume of
the socket's reading, a wake-up of the connection's reader task, then Engine.IO and Socket.IO packet
objects before the handler runs. Here the connection's protocol hands every message to
`Inbox.on_message` as soon as it is parsed, and a binary event whose handler is synchronous is
handled on the spot; every other message goes to the reader through ASGI exactly as before.

Order is kept: a message is handled on the spot only while nothing received before it is waiting
for the reader or being handled by it, and while Socket.IO itself is not waiting for an attachment.
A header whose next message is not its binary payload goes to the reader with that message, so
anything unusual gets Socket.IO's own handling.

Relies on uvicorn's websockets-sansio protocol internals, covered by tests: its per-message hook
`send_receive_event_to_app`, the `frames` and `curr_msg_data_type` it fills before calling it, its
ASGI receive `queue` and `close_sent`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Container
from typing import Any

PLACEHOLDER = {"_placeholder": True, "num": 0}
# A binary event with one attachment in the default namespace: 45, attachments, "-", ack id, "[name",
_HEADER = re.compile(r'451-(\d*)\["([^"\\]{1,64})",')

# (event name, args, ack id or "") -> True when handled; False leaves the message to Socket.IO.
FastHandler = Callable[[str, list[Any], str], bool]


class Inbox:
    """Takes a connection's messages from its uvicorn protocol as they are parsed."""

    __slots__ = (
        "busy",
        "fast_names",
        "handle",
        "held",
        "limit",
        "protocol",
        "to_app",
        "waiting_attachment",
    )

    def __init__(self, protocol: Any, handle: FastHandler, fast_names: Container[str],
                 limit: int, waiting_attachment: Callable[[], bool]) -> None:
        self.protocol = protocol
        self.handle = handle
        self.fast_names = fast_names
        self.limit = limit
        self.waiting_attachment = waiting_attachment  # Socket.IO holds a header of its own
        self.held: re.Match[str] | None = None  # a fast event's parsed header, until its payload arrives
        self.busy = False  # the reader is handling a message it took from the queue
        self.to_app: Callable[[], None] = protocol.send_receive_event_to_app
        protocol.send_receive_event_to_app = self.on_message

    @classmethod
    def supported(cls, protocol: Any) -> bool:
        return all(hasattr(protocol, name) for name in
                   ("send_receive_event_to_app", "frames", "curr_msg_data_type", "queue", "close_sent"))

    def on_message(self) -> None:
        protocol = self.protocol
        held = self.held
        if held is not None:
            self.held = None
            if protocol.curr_msg_data_type == "bytes" and not protocol.close_sent:
                frames = protocol.frames
                payload = frames[0] if len(frames) == 1 else b"".join(frames)
                if len(payload) <= self.limit and self._dispatch(held, payload):
                    protocol.frames = []
                    return
            self._release(held)
            self.to_app()
            return
        if (protocol.curr_msg_data_type != "text" or protocol.close_sent or self.busy
                or not protocol.queue.empty() or len(protocol.frames) != 1):
            self.to_app()
            return
        data = protocol.frames[0]
        if not data.startswith(b"451-"):
            self.to_app()
            return
        try:
            text = data.decode()
        except UnicodeDecodeError:
            self.to_app()  # uvicorn closes the connection with 1007
            return
        match = _HEADER.match(text)
        if match is None or match[2] not in self.fast_names or self.waiting_attachment():
            self.to_app()
            return
        self.held = match
        protocol.frames = []

    def _dispatch(self, header: re.Match[str], payload: bytes) -> bool:
        try:
            args = json.loads(header.string[header.end(1):])
        except ValueError:
            return False
        if (type(args) is not list or len(args) < 2 or args[-1] != PLACEHOLDER
                or any(isinstance(arg, dict | list) for arg in args[1:-1])):
            return False  # unusual shapes get Socket.IO's own decoding
        args[-1] = payload
        return self.handle(args[0], args[1:], header[1])

    def _release(self, header: re.Match[str]) -> None:
        """Give a held header to the reader, as uvicorn would have."""
        self.protocol.queue.put_nowait({"type": "websocket.receive", "text": header.string})
