"""What a subscriber has not been able to take yet: bounded, per stream, priority streams first.

The old reflector had one 10-frame queue per receiver shared by every stream and dropped the
newest frame, so a burst of point clouds starved audio. Here each stream gets its own bounded
FIFO (frames and bytes), a full FIFO drops its oldest frame by default (the latest frame wins),
priority streams (audio) are always served before the others, and streams of equal rank take
turns so one busy stream cannot monopolise a slow link.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

from workers.tcp.settings import QueueSettings


class Frame(NamedTuple):
    """One complete, validated frame. Its buffers are shared read-only by all receivers.

    A tuple because one is built per frame: ``tuple.__new__(Frame, (...))`` is the cheapest build."""

    bufs: list  # header + payload, in order; never mutated once the frame is complete
    nbytes: int
    stream: str
    prio: bool
    t_read: float  # perf_counter() when its last byte was read



class _StreamQueue:
    __slots__ = ("frames", "nbytes")

    def __init__(self) -> None:
        self.frames: deque[Frame] = deque()
        self.nbytes = 0


class Outbox:
    """Backlog of one subscriber. ``drops`` is the worker-wide counter dict, keyed by reason."""

    __slots__ = (
        "_bulk",
        "_drop_newest",
        "_max_bytes",
        "_max_frames",
        "_max_streams",
        "_prio",
        "dropped",
        "drops",
        "frames",
        "nbytes",
    )

    def __init__(self, limits: QueueSettings, drops: dict[str, int]) -> None:
        self._prio: dict[str, _StreamQueue] = {}
        self._bulk: dict[str, _StreamQueue] = {}
        self._max_frames, self._max_bytes, self._max_streams = limits.frames, limits.bytes, limits.streams
        self._drop_newest = limits.drop == "newest"
        self.drops = drops
        self.dropped = 0
        self.frames = 0
        self.nbytes = 0

    def push(self, frame: Frame) -> None:
        queues = self._prio if frame.prio else self._bulk
        sq = queues.get(frame.stream)
        new = sq is None
        if new:
            if len(self._prio) + len(self._bulk) >= self._max_streams:
                return self._count("streams")
            sq = _StreamQueue()
        if frame.nbytes > self._max_bytes:
            return self._count("queue_bytes")
        if self._drop_newest:
            if len(sq.frames) >= self._max_frames:
                return self._count("queue_frames")
            if sq.nbytes + frame.nbytes > self._max_bytes:
                return self._count("queue_bytes")
        if new:
            queues[frame.stream] = sq
        sq.frames.append(frame)
        sq.nbytes += frame.nbytes
        self.frames += 1
        self.nbytes += frame.nbytes
        while len(sq.frames) > self._max_frames:
            self._evict(sq, "queue_frames")
        while sq.nbytes > self._max_bytes:
            self._evict(sq, "queue_bytes")
        return None

    def pop(self) -> Frame | None:
        """Next frame to send: priority streams first, round-robin among streams of equal rank."""
        queues = self._prio or self._bulk
        if not queues:
            return None
        name = next(iter(queues))
        sq = queues.pop(name)
        frame = sq.frames.popleft()
        sq.nbytes -= frame.nbytes
        self.frames -= 1
        self.nbytes -= frame.nbytes
        if sq.frames:
            queues[name] = sq  # re-inserted at the end: the next pop serves another stream
        return frame

    def clear(self, reason: str) -> None:
        """Discard everything (the subscriber left), counting each frame under ``reason``."""
        if self.frames:
            self.drops[reason] += self.frames
            self.dropped += self.frames
        self._prio.clear()
        self._bulk.clear()
        self.frames = self.nbytes = 0

    def _evict(self, sq: _StreamQueue, reason: str) -> None:
        old = sq.frames.popleft()
        sq.nbytes -= old.nbytes
        self.frames -= 1
        self.nbytes -= old.nbytes
        self._count(reason)

    def _count(self, reason: str) -> None:
        self.drops[reason] += 1
        self.dropped += 1
