"""One client connection: a sender whose frames are validated and a subscriber of everyone else's.

Reading uses the buffered-protocol API. Each read lands in a 1 MiB scratch buffer, so one
syscall brings in many small frames; a complete frame is copied out once (or, if it fills half
the buffer, the buffer itself becomes the frame's and reads move to a fresh one). The rest of a
large frame is read straight into its own buffers, allocated as its bytes arrive (2 MiB at a
time), never up front from the length a header claims. Every receiver writes from the same
buffers: no copy per receiver.

Writing never awaits: the frames completed by one read go to a receiver's transport in one
writelines() (one writev) while that transport's buffer is below its high-water mark; otherwise
they wait in the receiver's Outbox, whose bounded per-stream queues drop old frames. The
transport's pause/resume callbacks drive the draining.
"""

from __future__ import annotations

import asyncio
import socket
from time import perf_counter
from typing import TYPE_CHECKING, cast

from workers.tcp.framing import HEADER_SIZE, Header, HeaderError, parse_header
from workers.tcp.outbox import Frame, Outbox

if TYPE_CHECKING:
    from workers.tcp.reflector import Reflector

SCRATCH_BYTES = 1024 * 1024  # one read: many small frames, or the start of a large one
SMALL_FRAME = 128 * 1024  # frames up to this size are assembled in the scratch buffer
CHUNK_BYTES = 2 * 1024 * 1024  # most a slow sender can make us allocate ahead of its data
_new = tuple.__new__  # _new(Frame, (...)): a Frame without NamedTuple's Python-level __new__


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
        self._scratch: memoryview | None = None  # allocated on first read: pure receivers never need it
        self._start = self._end = 0  # unparsed bytes are _scratch[_start:_end]
        self._waiting: Header | None = None  # header of the small frame at _start still arriving
        self._chunks: list[bytearray | memoryview] = []  # the large frame being received directly
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
        if self._scratch is None:
            self._scratch = memoryview(bytearray(SCRATCH_BYTES))
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
        prio = self.hub.is_priority(self._stream)
        self._emit([_new(Frame, (chunks, self._total, self._stream, prio, now))], self._total)

    def _parse(self, now: float) -> None:
        """Take every complete frame out of the scratch buffer; set up a direct read for a large one."""
        sv: memoryview = self._scratch  # type: ignore[assignment]  # set by get_buffer before any read
        start, end = self._start, self._end
        batch: list[Frame] = []
        nbytes = 0
        is_priority = self.hub.is_priority
        error = None
        retire = False  # a frame took part of the scratch buffer itself: reads go to a fresh one
        header, self._waiting = self._waiting, None  # validated already; not again on every read
        while end - start >= HEADER_SIZE:
            if header is None:
                try:
                    header = parse_header(sv[start : start + HEADER_SIZE], self._max_length)
                except HeaderError as exc:
                    error = exc
                    break
            total = HEADER_SIZE + header.length
            if end - start >= total:  # complete: copied out, or if it fills half the buffer, taken whole
                big = total >= SCRATCH_BYTES // 2
                buf = sv[start : start + total] if big else sv[start : start + total].tobytes()
                batch.append(_new(Frame, ([buf], total, header.stream, is_priority(header.stream), now)))
                nbytes += total
                retire |= big
                start += total
            elif total > SMALL_FRAME:  # large: the rest is read straight into the frame's own buffers
                have = end - start
                if have >= SCRATCH_BYTES // 2:
                    self._chunks, self._remaining, retire = [sv[start:end]], total - have, True
                    self._next_chunk()
                else:
                    first = bytearray(min(total, CHUNK_BYTES))
                    first[:have] = sv[start:end]
                    self._chunks, self._cur, self._pos = [first], memoryview(first), have
                    self._remaining = total - len(first)
                self._total, self._stream = total, header.stream
                start = end = 0
            else:
                self._waiting = header  # a small frame still arriving: it completes in the scratch buffer
                break
            header = None
        if retire:  # the taken bytes are never written again; what is left moves to a fresh buffer
            left, self._scratch = end - start, None
            if left:
                self._scratch = memoryview(bytearray(SCRATCH_BYTES))
                self._scratch[:left] = sv[start:end]
            start, end = 0, left
        elif start == end:
            start = end = 0
        elif start > SCRATCH_BYTES - SMALL_FRAME:  # keep room for the pending frame to complete
            sv[: end - start] = sv[start:end]
            start, end = 0, end - start
        self._start, self._end = start, end
        pending = end - start
        if not pending or pending >= HEADER_SIZE:
            self.header_since = 0.0
        elif batch or not self.header_since:
            self.header_since = now
        if batch:
            self._emit(batch, nbytes)  # valid frames that came before a bad header still go out
        if error is not None:
            self.close(error.reason, str(error))

    def _next_chunk(self) -> None:
        size = min(self._remaining, CHUNK_BYTES)
        chunk = bytearray(size)
        self._remaining -= size
        self._chunks.append(chunk)
        self._cur, self._pos = memoryview(chunk), 0

    def _emit(self, frames: list[Frame], nbytes: int) -> None:
        self.frames_in += len(frames)
        self.bytes_in += nbytes
        self.hub.dispatch(self, frames, nbytes)

    # -- writing -----------------------------------------------------------------------------

    def offer(self, frames: list[Frame], bufs: list, nbytes: int) -> None:
        """Hand frames over now if the link has room, else queue them (the queue may drop).

        ``bufs`` are the frames' buffers in order and ``nbytes`` their size, computed once for all
        receivers."""
        if self.closing:
            return
        if self.paused or self.outbox.frames:
            for frame in frames:
                self.outbox.push(frame)
        else:
            self._send(frames, bufs, nbytes)

    def _send(self, frames: list[Frame], bufs: list, nbytes: int) -> None:
        """One write (one syscall) for a batch: fewer, larger writes cost far less per byte."""
        try:
            if len(bufs) == 1:
                self.transport.write(bufs[0])  # type: ignore[union-attr]
            else:
                self.transport.writelines(bufs)  # type: ignore[union-attr]
        except RuntimeError:  # the transport already failed; connection_lost is on its way
            self.closing = True
            return
        self.last_tx = now = perf_counter()
        self.frames_out += len(frames)
        self.bytes_out += nbytes
        self.hub.latency.add_batch(now, frames)

    def pause_writing(self) -> None:
        self.paused, self.paused_since = True, perf_counter()

    def resume_writing(self) -> None:
        self.paused = False
        outbox, limit = self.outbox, self.hub.settings.write_buffer_high
        while outbox.frames and not self.paused and not self.closing:
            batch, size = [], 0
            while outbox.frames and size < limit:
                frame = outbox.pop()
                batch.append(frame)  # type: ignore[arg-type]
                size += frame.nbytes  # type: ignore[union-attr]
            self._send(batch, [b for f in batch for b in f.bufs], size)
