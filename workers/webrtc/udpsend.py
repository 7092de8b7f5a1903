"""Batched UDP sends: one system call per run of equal-sized datagrams (Linux UDP GSO).

The kernel's per-call cost dominates forwarding (over half of the SFU's CPU with one sendto per
packet). Datagrams queued during one event-loop iteration are flushed together at its end; with
``UDP_SEGMENT`` a run of same-sized datagrams (plus one shorter last one) goes out in a single
``sendmsg`` and is split by the kernel, so receivers still see ordinary datagrams. Where GSO is
unavailable the sender falls back to one ``sendto`` per datagram.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import sys

SOL_UDP = getattr(socket, "SOL_UDP", 17)
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
MAX_SEGMENTS = 64  # UDP_MAX_SEGMENTS in the kernel
MAX_GSO_BYTES = 65000  # one IP datagram
GSO_UNSUPPORTED = {errno.EINVAL, errno.EOPNOTSUPP, errno.ENOPROTOOPT, errno.EIO}


class BatchSender:
    """Sends on its own duplicate of an event-loop socket, so closing it never affects the loop."""

    def __init__(self, fileno: int, addr: tuple, *, gso: bool, max_pending: int, buffer_bytes: int) -> None:
        self._sock = socket.socket(fileno=os.dup(fileno))
        self._sock.setblocking(False)
        if buffer_bytes:
            for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
                self._sock.setsockopt(socket.SOL_SOCKET, opt, buffer_bytes)  # shared with the original
        self._addr = addr
        self._pending: list[bytes] = []
        self._scheduled = False
        self._loop = asyncio.get_running_loop()
        self.gso = gso
        self.max_pending = max_pending
        self.dropped = 0
        self.calls = 0

    def send(self, data: bytes) -> bool:
        """Queue one datagram for the end of this loop iteration; False if the queue is full."""
        pending = self._pending
        if len(pending) >= self.max_pending:
            self.dropped += 1
            return False
        pending.append(data)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)
        return True

    def flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        n, i = len(pending), 0
        while i < n:
            size = len(pending[i])
            j = i + 1
            if self.gso:
                limit = min(n, i + min(MAX_SEGMENTS, MAX_GSO_BYTES // size))
                while j < limit and len(pending[j]) == size:
                    j += 1
                if j < limit and len(pending[j]) < size:
                    j += 1  # GSO allows a shorter last segment (the end of a frame)
            try:
                if j - i == 1:
                    self._sock.sendto(pending[i], self._addr)
                else:
                    segment = [(SOL_UDP, UDP_SEGMENT, size.to_bytes(2, sys.byteorder))]
                    self._sock.sendmsg([b"".join(pending[i:j])], segment, 0, self._addr)
                self.calls += 1
            except BlockingIOError:
                self.dropped += j - i  # socket buffer full: UDP semantics, drop
            except OSError as exc:
                if j - i > 1 and exc.errno in GSO_UNSUPPORTED:
                    self.gso = False  # retry this run one datagram at a time
                    continue
                self.dropped += j - i
            i = j

    def close(self) -> None:
        self._pending.clear()
        self._sock.close()
