"""Batched UDP sends on real loopback sockets: order, sizes, GSO call count, queue bound."""

from __future__ import annotations

import asyncio
import socket

import pytest

from workers.webrtc.udpsend import BatchSender


@pytest.fixture
def pair():  # type: ignore[no-untyped-def]
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2**21)
    rx.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind(("127.0.0.1", 0))
    yield tx, rx
    tx.close()
    rx.close()


async def receive(rx: socket.socket, count: int) -> list[bytes]:
    loop = asyncio.get_running_loop()
    return [await asyncio.wait_for(loop.sock_recv(rx, 2000), 5) for _ in range(count)]


SIZES = [1208] * 60 + [500] + [1208] * 3 + [10]


@pytest.mark.parametrize(("gso", "calls"), [(True, 3), (False, len(SIZES))])
async def test_flush_keeps_order_and_sizes(pair, gso: bool, calls: int) -> None:  # type: ignore[no-untyped-def]
    tx, rx = pair
    sender = BatchSender(tx.fileno(), rx.getsockname(), gso=gso, max_pending=1000, buffer_bytes=2**21)
    sent = [bytes([i % 251]) * size for i, size in enumerate(SIZES)]
    assert all(sender.send(d) for d in sent)
    got = await receive(rx, len(sent))  # flushed at the end of this loop iteration
    assert got == sent
    # GSO: 53 full segments (65000 // 1208), then 7 + the short 500, then 3 + the short 10
    assert (sender.calls, sender.dropped) == (calls, 0)
    sender.close()
    tx.sendto(b"still open", rx.getsockname())  # the duplicate fd was closed, not the original
    assert await receive(rx, 1) == [b"still open"]


async def test_queue_is_bounded(pair) -> None:  # type: ignore[no-untyped-def]
    tx, rx = pair
    sender = BatchSender(tx.fileno(), rx.getsockname(), gso=True, max_pending=5, buffer_bytes=0)
    assert [sender.send(b"x" * 100) for _ in range(6)] == [True] * 5 + [False]
    assert sender.dropped == 1
    assert len(await receive(rx, 5)) == 5
    sender.close()
