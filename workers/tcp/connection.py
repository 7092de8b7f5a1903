"""One client connection: a sender whose frames are validated and a subscriber of everyone else's.

Reading uses the buffered-protocol API so a large payload is received straight into the buffer
that every receiver then writes from: one kernel-to-user copy per frame and none per receiver.
Small frames are parsed out of a fixed scratch buffer. Memory for a frame is allocated as its
bytes arrive (in chunks), never up front from the length a header claims.

Writing never awaits: a frame goes to the transport at once while the transport's buffer is
below its high-water mark; otherwise it waits in the subscriber's Outbox, whose bounded per-stream
queues drop old frames. The transport's pause/resume callbacks drive the draining.
"""

from __future__ import annotations

import asyncio
import socket
from time import perf_counter
from typing import TYPE_CHECKING, cast

from workers.tcp.framing import HEADER_SIZE, HeaderError, parse_header
from workers.tcp.outbox import Frame, Outbox

if TYPE_CHECKING:
    from workers.tcp.reflector import Reflector

SCRATCH_BYTES = 64 * 1024  # one read of small frames (audio) or the start of a large one
CHUNK_BYTES = 2 * 1024 * 1024  # most a slow sender can make us allocate ahead of its data


class Connection(asyncio.BufferedProtocol):
    def __init__(self, hub: Reflector) -> None:
        self.hub = hub
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.closing = False  # offer no more frames
        self.aborted = False  # the worker dropped it (close() was called)
        self.reason = "peer"  # why it closed; the hub counts it in /stats
        self.paused = False
        self.paused_since = 0.0
        self.outbox = Outbox(hub.settings.queue, hub.drops)
        self.frames_in = self.bytes_in = self.frames_out = self.bytes_out = 0
        self.last_rx = self.last_tx = perf_counter()
        self.header_since = 0.0  # when the pending partial header began (0: none pending)
        self._max_length = hub.settings.max_frame_bytes
        self._scratch = memoryview(bytearray(SCRATCH_BYTES))
        self._start = self._end = 0  # unparsed bytes are _scratch[_start:_end]
        self._chunks: list[bytearray] = []  # the frame being received directly (large frames)
        self._cur: memoryview | None = None  # chunk now being filled, None when reading into scratch
        self._pos = 0
        self._remaining = 0  # bytes of the frame not yet allocated
        self._total = 0
        self._stream = ""

    # -- lifecycle ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        if not self.hub.admit(self):
            self.closing, self.reason = True, "connection_cap"
            transport.close()
            return
        settings = self.hub.settings
        transport.set_write_buffer_limits(high=settings.write_buffer_high, low=settings.write_buffer_low)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.aborted and self.reason == "peer" and (exc is not None or self.mid_frame):
            self.reason = "truncated" if self.mid_frame else "error"
            self.hub.log_close(self, self.reason, str(exc or "connection lost mid-frame"))
        self.closing = True
        self.outbox.clear("disconnect")
        self._chunks, self._cur = [], None
        self.hub.release(self)

    def eof_received(self) -> bool:
        if self.mid_frame:
            self.reason = "truncated"
            self.hub.log_close(self, "truncated", "peer closed in the middle of a frame")
        self.closing = True  # no new frames; close() still flushes what the transport holds
        return False

    def close(self, reason: str, detail: str) -> None:
        """Drop the connection now, logging the reason once (a partial frame is discarded)."""
        if self.aborted or self.transport is None:
            return
        self.closing, self.aborted, self.reason = True, True, reason
        self.hub.log_close(self, reason, detail)
        self.transport.abort()

    @property
    def mid_frame(self) -> bool:
        return self._cur is not None or self._end > self._start

    @property
    def partial_bytes(self) -> int:
        """Bytes of an incomplete frame held for this sender (reported in /stats)."""
        if self._cur is None:
            return self._end - self._start
        return sum(map(len, self._chunks[:-1])) + self._pos

    # -- reading -----------------------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._cur is not None:
            return self._cur[self._pos :]
        return self._scratch[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        now = self.last_rx = perf_counter()
        if self._cur is None:
            self._end += nbytes
            self._parse(now)
            return
        self._pos += nbytes
        if self._pos < len(self._cur):
            return
        if self._remaining:
            self._next_chunk()
            return
        chunks, self._chunks, self._cur = self._chunks, [], None
        self._emit(chunks, self._total, self._stream, now)

    def _parse(self, now: float) -> None:
        sv, start, end = self._scratch, self._start, self._end
        consumed = False
        while end - start >= HEADER_SIZE:
            try:
                header = parse_header(sv[start : start + HEADER_SIZE], self._max_length)
            except HeaderError as exc:
                self.close(exc.reason, str(exc))
                return
            total = HEADER_SIZE + header.length
            consumed = True
            if end - start >= total:  # a whole small frame: one copy out of the scratch buffer
                self._emit([sv[start : start + total].tobytes()], total, header.stream, now)
                start += total
                continue
            first = bytearray(min(total, CHUNK_BYTES))  # the rest is read straight into its own buffer
            first[: end - start] = sv[start:end]
            self._chunks, self._cur, self._pos = [first], memoryview(first), end - start
            self._remaining, self._total, self._stream = total - len(first), total, header.stream
            start = end = 0
            break
        if start:
            left = end - start  # < HEADER_SIZE and start >= HEADER_SIZE: no overlap
            sv[:left] = sv[start:end]
            start, end = 0, left
        self._start, self._end = start, end
        if not end:
            self.header_since = 0.0
        elif consumed or not self.header_since:
            self.header_since = now

    def _next_chunk(self) -> None:
        size = min(self._remaining, CHUNK_BYTES)
        chunk = bytearray(size)
        self._remaining -= size
        self._chunks.append(chunk)
        self._cur, self._pos = memoryview(chunk), 0

    def _emit(self, bufs: list, total: int, stream: str, now: float) -> None:
        self.frames_in += 1
        self.bytes_in += total
        self.hub.dispatch(self, Frame(bufs, total, stream, self.hub.is_priority(stream), now))

    # -- writing -----------------------------------------------------------------------------

    def offer(self, frame: Frame) -> None:
        """Hand a frame over now if the link has room, else queue it (the queue may drop)."""
        if self.closing:
            return
        if self.paused or self.outbox.frames:
            self.outbox.push(frame)
        else:
            self._send(frame)

    def _send(self, frame: Frame) -> None:
        try:
            if len(frame.bufs) == 1:
                self.transport.write(frame.bufs[0])  # type: ignore[union-attr]
            else:
                self.transport.writelines(frame.bufs)  # type: ignore[union-attr]
        except RuntimeError:  # the transport already failed; connection_lost is on its way
            self.closing = True
            return
        now = self.last_tx = perf_counter()
        self.frames_out += 1
        self.bytes_out += frame.nbytes
        self.hub.latency.add(now - frame.t_read)

    def pause_writing(self) -> None:
        self.paused, self.paused_since = True, perf_counter()

    def resume_writing(self) -> None:
        self.paused = False
        outbox = self.outbox
        while outbox.frames and not self.paused and not self.closing:
            self._send(outbox.pop())  # type: ignore[arg-type]
