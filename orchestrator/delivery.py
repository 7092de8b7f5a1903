"""Getting events to clients: encode once, write or enqueue for every recipient, bound what waits.

python-socketio's emit creates a task per recipient and encodes per call, and Engine.IO's
per-client queue is unbounded, so one client that stops reading would grow the server without
limit. Here every packet is encoded once and given to each recipient's Engine.IO queue (a
`MeteredQueue` that counts bytes). On a WebSocket served by uvicorn the queue writes the packet's
frame straight to the transport while the transport drains (see wire.py), so packets wait in it only
for a client that reads slower than it is sent to; there data frames (SendData) get a per-recipient
budget with oldest-first and stale dropping, and a client whose queue passes a hard limit is
disconnected. Incoming SendData is handled as uvicorn parses it (see inbound.py).

Relies on python-engineio internals, covered by tests: `AsyncServer.create_queue` (the factory every
socket's outgoing queue comes from), `AsyncServer.sockets` (eio sid -> socket), and two methods of
`AsyncSocket` that `install_fast_paths` replaces: `poll` (the writer's wait for packets) and
`_websocket_handler` (the per-connection read and write loops) for connections that start as WebSockets.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from typing import Any

import socketio
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet
from engineio.async_socket import AsyncSocket
from socketio import packet as sio_packet

from .inbound import Inbox
from .model import Note
from .settings import Settings
from .stats import Stats
from .wire import DirectSink, wire_bytes, wire_parts

log = logging.getLogger("orchestrator.delivery")


class FramePacket(eio_packet.Packet):
    """The first Engine.IO packet of a droppable data frame; `parts` packets belong to it."""

    parts: int = 1
    frame_bytes: int
    frame_wire: tuple[bytes, ...]  # WebSocket frames of all its packets, written at once when nothing waits
    queued_at: float = 0.0  # monotonic time the frame was queued (the same for every recipient)


class MeteredQueue(asyncio.Queue):  # type: ignore[type-arg]
    """An Engine.IO outgoing queue that knows how many bytes and data frames it holds.

    On a WebSocket connection served by uvicorn it also has a `sink`: a packet is then written to
    the transport at once when nothing is waiting before it, and only waits here while the
    transport is above its high-water mark (the client reads slower than it is sent to), which is
    where the data budgets apply.
    """

    def _init(self, maxsize: int) -> None:
        self._queue: collections.deque[Any] = collections.deque()
        self.frames: collections.deque[FramePacket] = collections.deque()  # waiting frame heads, oldest first
        self.bytes = 0
        self.data_frames = 0
        self.data_bytes = 0
        self.sink: DirectSink | None = None
        self.holding = False  # the writer has taken a packet it has not yet written
        self.discarding = False  # the connection is gone: nothing put here would ever be sent

    def direct(self) -> bool:
        """True when a packet put now may be written at once without overtaking a waiting one."""
        sink = self.sink
        return sink is not None and not self._queue and not self.holding and sink.ready()

    def put_nowait(self, item: Any) -> None:
        if self.discarding:
            return
        if item is not None and self.direct():
            self.sink.write(wire_bytes(item))  # type: ignore[union-attr]
            return
        super().put_nowait(item)

    def discard(self) -> None:
        """Drop what waits and whatever comes later, so that Engine.IO's close (which waits for the
        queue to empty) returns once the connection is gone."""
        self.discarding = True
        while self._queue:
            self.get_nowait()
            self.task_done()

    def _put(self, item: Any) -> None:
        self._queue.append(item)
        self.bytes += _size(item)

    def _get(self) -> Any:
        item = self._queue.popleft()
        size = _size(item)
        self.bytes -= size
        if getattr(item, "frame_bytes", None) is not None:
            self.frames.popleft()
            self.data_frames -= 1
            self.data_bytes -= item.frame_bytes
        return item

    def put_frame(self, packets: list[eio_packet.Packet], frame_bytes: int) -> None:
        head = packets[0]
        if self.discarding:
            return
        if self.direct():
            self.sink.write_parts(head.frame_wire)  # type: ignore[attr-defined,union-attr]
            return
        for pkt in packets:
            self.put_nowait(pkt)
        self.frames.append(head)
        self.data_frames += 1
        self.data_bytes += frame_bytes

    def drop_oldest_frame(self) -> bool:
        """Remove the oldest waiting data frame (all its packets); False if there is none."""
        if not self.frames:
            return False
        oldest = self.frames.popleft()
        queue = self._queue
        for index, item in enumerate(queue):
            if item is not oldest:
                continue
            frame_bytes = item.frame_bytes
            parts = item.parts
            for _ in range(parts):
                victim = queue[index]
                del queue[index]
                self.bytes -= _size(victim)
            self.data_frames -= 1
            self.data_bytes -= frame_bytes
            # asyncio.Queue tracks unfinished tasks for join(); keep it consistent.
            self._unfinished_tasks -= parts
            if self._unfinished_tasks == 0:
                self._finished.set()
            return True
        return False


def _size(item: Any) -> int:
    data = getattr(item, "data", None)
    return len(data) if isinstance(data, str | bytes | bytearray) else 0


def _encoded_parts(event: str, args: tuple[Any, ...]) -> list[Any]:
    encoded = sio_packet.Packet(sio_packet.EVENT, namespace="/", data=[event, *args]).encode()
    return encoded if isinstance(encoded, list) else [encoded]


def encode_event(event: str, args: tuple[Any, ...]) -> list[eio_packet.Packet]:
    """One Socket.IO event as the Engine.IO packets every recipient can share."""
    return [eio_packet.Packet(eio_packet.MESSAGE, part) for part in _encoded_parts(event, args)]


def encode_frame(event: str, args: tuple[Any, ...], frame_bytes: int) -> list[eio_packet.Packet]:
    """A data frame: like encode_event, with a droppable head that knows the frame's size and parts."""
    parts = _encoded_parts(event, args)
    head = FramePacket(eio_packet.MESSAGE, parts[0])
    head.parts = len(parts)
    head.frame_bytes = frame_bytes
    packets = [head] + [eio_packet.Packet(eio_packet.MESSAGE, part) for part in parts[1:]]
    head.frame_wire = tuple(part for pkt in packets for part in wire_parts(pkt))
    return packets


async def _fast_poll(self: AsyncSocket) -> list[Any]:
    """Every packet waiting for this client, without a task per wake-up.

    Engine.IO's own poll wraps each wait in asyncio.wait_for, which on Python 3.11 creates a task per
    call: one per batch of packets for every client, the largest fixed cost of fan-out. Here the wait
    happens only when the queue is empty, and under a timeout context rather than a new task.
    """
    queue = self.queue
    if queue.empty():
        try:
            async with asyncio.timeout(self.server.ping_interval + self.server.ping_timeout):
                first = await queue.get()
        except (TimeoutError, asyncio.CancelledError):
            raise eio_exceptions.QueueEmpty() from None
    else:
        first = queue.get_nowait()
    queue.task_done()
    if first is None:
        return []
    packets = [first]
    while not queue.empty():
        pkt = queue.get_nowait()
        queue.task_done()
        if pkt is None:
            queue.put_nowait(None)  # the writer sends what it has, then sees the end next time
            break
        packets.append(pkt)
    return packets


_upgrade_handler = AsyncSocket._websocket_handler


async def _fast_websocket_handler(self: AsyncSocket, ws: Any) -> None:
    """The read and write loops of a connection that starts as a WebSocket (the Unity client's).

    Engine.IO's loop wraps every incoming message in a new task and asyncio.wait_for; here each
    message is awaited directly under a timeout context. Outgoing packets are written straight to
    the transport when uvicorn serves the connection (see `MeteredQueue`); the writer task only
    sends what had to wait. Upgrades from polling keep Engine.IO's loop.
    """
    if self.connected:
        return await _upgrade_handler(self, ws)
    self.connected = True
    self.upgraded = True
    server = self.server
    queue: MeteredQueue = self.queue
    sink = DirectSink.of(ws)
    writer = asyncio.ensure_future(_flush_waiting(queue, sink) if sink else _send_through_asgi(self, ws))
    delivery: Delivery = server.delivery  # set with the fast paths (Delivery.__init__)
    inbox = None
    if sink is not None:
        queue.sink = sink
        inbox = delivery.inbox_for(self, sink.protocol)
    timeout = server.ping_interval + server.ping_timeout
    limit = server.max_http_buffer_size
    while True:
        try:
            async with asyncio.timeout(timeout):
                data = await ws.wait()
        except Exception:  # timeout, disconnect, transport error: the connection is over
            break
        if data is None or len(data) > limit:
            break
        if inbox is not None:
            inbox.busy = True  # messages parsed meanwhile must wait their turn
        try:
            await self.receive(eio_packet.Packet(encoded_packet=data))
        except (eio_exceptions.UnknownPacketError, ValueError) as exc:  # not an Engine.IO packet
            delivery.on_malformed(self.sid, exc)
        except eio_exceptions.SocketIsClosedError:
            break
        except Exception:
            log.exception("receive error on %s", self.sid)
        finally:
            if inbox is not None:
                inbox.busy = False
    queue.put_nowait(None)  # ends the writer once it has sent what is waiting
    if sink is not None and not sink.writable.is_set():
        sink.abort()  # the peer stopped reading: what waits would never be sent
    await writer
    if sink is None or sink.ready():
        await ws.close()
    if sink is not None:
        queue.discard()
    await self.close(wait=False, abort=True, reason=server.reason.TRANSPORT_CLOSE)


async def _flush_waiting(queue: MeteredQueue, sink: DirectSink) -> None:
    """Write what waited for the transport to drain, in order, as soon as it has drained."""
    while True:
        pkt = await queue.get()
        queue.task_done()
        queue.holding = True
        try:
            if pkt is None:
                return
            await sink.writable.wait()  # uvicorn sets it when the transport drains or is lost
            if not sink.ready():
                queue.discard()
                return
            sink.write(wire_bytes(pkt))
            while queue._queue and sink.ready():
                pkt = queue.get_nowait()
                queue.task_done()
                if pkt is None:
                    return
                sink.write(wire_bytes(pkt))
        finally:
            queue.holding = False


async def _send_through_asgi(sock: AsyncSocket, ws: Any) -> None:
    """The writer for servers other than uvicorn's websockets-sansio: every packet through ASGI."""
    while True:
        try:
            packets = await sock.poll()
        except eio_exceptions.QueueEmpty:
            break
        if not packets:
            break
        try:
            for pkt in packets:
                await ws.send(pkt.encode())
        except Exception:  # the peer is gone; the read loop notices too
            break


def install_fast_paths() -> None:
    AsyncSocket.poll = _fast_poll  # type: ignore[method-assign]
    AsyncSocket._websocket_handler = _fast_websocket_handler  # type: ignore[method-assign]


class Delivery:
    def __init__(self, sio: socketio.AsyncServer, settings: Settings, stats: Stats) -> None:
        self.sio = sio
        self.settings = settings
        self.stats = stats
        self._queues: dict[str, tuple[str, MeteredQueue]] = {}  # user id -> (sid, queue)
        # event name -> synchronous handler (sid, args) -> ack body, run as soon as the event is parsed
        self.fast_events: dict[str, Callable[[str, list[Any]], Any]] = {}
        # (eio sid, error) for an incoming packet that cannot be decoded; the application counts it
        self.on_malformed: Callable[[str, Exception], None] = lambda eio_sid, exc: None
        sio.eio.create_queue = lambda *a, **kw: MeteredQueue()  # type: ignore[method-assign]
        sio.eio.delivery = self  # found by the WebSocket handler, which runs on Engine.IO's socket
        install_fast_paths()

    def inbox_for(self, sock: AsyncSocket, protocol: Any) -> Inbox | None:
        """Hand `fast_events` to the socket's WebSocket protocol as they are parsed (see inbound.py)."""
        if not self.fast_events or not Inbox.supported(protocol):
            return None
        sio = self.sio
        eio_sid = sock.sid
        fast_events = self.fast_events
        binary_waiting = sio._binary_packet  # Socket.IO's headers waiting for their attachments

        def handle(name: str, args: list[Any], ack_id: str) -> bool:
            sid = sio.manager.sid_from_eio_sid(eio_sid, "/")
            if sid is None:
                return False
            reply = fast_events[name](sid, args)
            if ack_id and not sock.closed:
                ack = sio_packet.Packet(sio_packet.ACK, namespace="/", data=[] if reply is None else [reply],
                                        id=int(ack_id)).encode()
                sock.queue.put_nowait(eio_packet.Packet(eio_packet.MESSAGE, ack))
            return True

        return Inbox(protocol, handle, fast_events, self.sio.eio.max_http_buffer_size,
                     lambda: eio_sid in binary_waiting)

    def attach(self, user_id: str, sid: str) -> None:
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        sock = self.sio.eio.sockets.get(eio_sid)
        if sock is None:
            return
        self._queues[user_id] = (sid, sock.queue)

    def release_poll(self, sid: str) -> None:
        """End a polling client's pending long-poll at disconnect instead of at its ping timeout."""
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        sock = self.sio.eio.sockets.get(eio_sid) if eio_sid else None
        if sock is not None and not sock.upgraded:
            sock.queue.put_nowait(None)

    def detach(self, user_id: str) -> None:
        self._queues.pop(user_id, None)

    def queue_of(self, user_id: str) -> MeteredQueue | None:
        entry = self._queues.get(user_id)
        return entry[1] if entry else None

    def deliver(self, notes: list[Note]) -> None:
        for note in notes:
            self.send(note.to, note.event, note.args)

    def send(self, to: tuple[str, ...] | list[str], event: str, args: tuple[Any, ...]) -> None:
        """A control event: always enqueued (never dropped), unless the recipient is hopelessly behind."""
        if not to:
            return
        packets = encode_event(event, args)
        queues = self._queues
        for user_id in to:
            entry = queues.get(user_id)
            if entry is None:
                continue
            sid, queue = entry
            for pkt in packets:
                queue.put_nowait(pkt)
            if queue.bytes > self.settings.max_outgoing_bytes:
                self._overflow(user_id, sid, queue)
        self.stats.events_out[event] += len(to)

    def send_data(self, to: list[str], event: str, args: tuple[Any, ...],
                  frame_bytes: int) -> list[str] | None:
        """A data frame: encoded once; each recipient keeps at most its budget, newest frames win.

        Returns the recipients not connected to this process (None when there are none)."""
        packets = encode_frame(event, args, frame_bytes)
        now = time.monotonic()
        packets[0].queued_at = now  # type: ignore[attr-defined]
        stale = now - self.settings.data_max_age_s
        max_frames = self.settings.data_queue_frames
        max_bytes = self.settings.data_queue_bytes
        stats = self.stats
        queues = self._queues
        elsewhere = None
        for user_id in to:
            entry = queues.get(user_id)
            if entry is None:
                if elsewhere is None:
                    elsewhere = []
                elsewhere.append(user_id)
                continue
            queue = entry[1]
            frames = queue.frames
            while frames and frames[0].queued_at < stale:  # live media: a late frame is a useless frame
                queue.drop_oldest_frame()
                stats.data_dropped["stale"] += 1
            while (queue.data_frames >= max_frames or queue.data_bytes + frame_bytes > max_bytes) \
                    and queue.drop_oldest_frame():
                stats.data_dropped["slow_consumer"] += 1
            if queue.data_bytes + frame_bytes > max_bytes:
                stats.data_dropped["frame_over_budget"] += 1
                continue
            queue.put_frame(packets, frame_bytes)
            stats.data_frames_out += 1
            stats.data_bytes_out += frame_bytes
        return elsewhere

    async def disconnect(self, sid: str) -> None:
        """End a client's connection: Socket.IO's disconnect, then the WebSocket itself.

        A client that stopped reading is cut at once (what waits for it would never arrive, and
        Engine.IO's close waits for its queue to empty), and one that ignores the close packet does
        not keep its connection open until the ping timeout."""
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        sock = self.sio.eio.sockets.get(eio_sid) if eio_sid else None
        sink = getattr(getattr(sock, "queue", None), "sink", None)
        if sink is not None and not sink.writable.is_set():
            sink.abort()
            sock.queue.discard()  # type: ignore[union-attr]
        await self.sio.disconnect(sid)
        if sink is not None and sink.ready():
            await sink.close()

    def _overflow(self, user_id: str, sid: str, queue: MeteredQueue) -> None:
        log.warning("disconnecting user %s: %d bytes waiting to be sent (limit %d); it is not reading",
                    user_id, queue.bytes, self.settings.max_outgoing_bytes)
        self.stats.rejected["outgoing_overflow"] += 1
        self._queues.pop(user_id, None)
        asyncio.get_running_loop().create_task(self.disconnect(sid))
