"""Connection cap, timeouts, and no leftovers once clients leave."""

from __future__ import annotations

import asyncio
import socket
import struct
import time

from workers.tcp.framing import build_header


async def test_connection_cap(spawn, connect) -> None:
    worker = spawn({"max_connections": 2})
    a, b = await connect.session(worker, 2)
    extra = await connect(worker.port)
    assert await extra.closed_by_peer() == b""
    stats = await worker.until(lambda s: s["closed"]["connection_cap"] == 1)
    assert stats["connections"] == 2
    await a.send("alice/audio/0", b"members still talk")
    assert await b.recv_payload() == b"members still talk"
    a.close()  # a freed slot can be taken again
    await worker.until(lambda s: s["connections"] == 1)
    c = (await connect.session(worker, 1))[0]
    await b.send("bob/audio/0", b"welcome")
    assert await c.recv_payload() == b"welcome"


async def test_idle_timeout(spawn, connect) -> None:
    worker = spawn({"idle_timeout_s": 0.5})
    quiet = (await connect.session(worker, 1))[0]
    started = time.monotonic()
    assert await quiet.closed_by_peer() == b""
    assert 0.4 < time.monotonic() - started < 3
    assert (await worker.until(lambda s: s["closed"]["idle_timeout"] == 1))["connections"] == 0


async def test_idle_timeout_spares_busy_connections(spawn, connect) -> None:
    worker = spawn({"idle_timeout_s": 0.6})
    sender, receiver = await connect.session(worker, 2)
    for i in range(12):  # 1.2 s of traffic: the sender sends, the receiver receives
        await sender.send("alice/audio/0", b"x", timestamp=i)
        await receiver.recv_frame()
        await asyncio.sleep(0.1)
    stats = await worker.astats()
    assert stats["connections"] == 2 and stats["closed"]["idle_timeout"] == 0


async def test_header_timeout(spawn, connect) -> None:
    worker = spawn({"header_timeout_s": 0.3})
    slowpoke, _receiver = await connect.session(worker, 2)
    await slowpoke.send_raw(build_header("alice/audio/0", 1, 3)[:40])
    assert await slowpoke.closed_by_peer() == b""
    stats = await worker.until(lambda s: s["closed"]["header_timeout"] == 1)
    assert stats["connections"] == 1 and stats["frames_out"] == 0


async def test_no_leftovers_after_everyone_leaves(spawn, connect) -> None:
    worker = spawn({"lag_disconnect_s": 60})
    idle = await worker.astats()
    idle_rss = worker.rss()
    clients = await connect.session(worker, 12, rcvbuf=16384)  # nobody reads: backlogs build up
    for rounds in range(5):
        for i, client in enumerate(clients[:4]):
            await client.send(f"user{i}/pointcloud/0", b"p" * 500_000, timestamp=rounds)
            await client.send(f"user{i}/audio/0", b"a" * 500, timestamp=rounds)
    busy = await worker.astats()
    assert busy["queued_frames"] > 0 and busy["drops"]["queue_frames"] == 0
    await clients[4].send_raw(build_header("user4/pointcloud/0", 0, 10_000)[:64])  # leaves mid-header
    for client in clients[:6]:
        client.close()
    for client in clients[6:]:  # the rest vanish with a reset, unread data and all
        sock = client.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.writer.transport.abort()
    stats = await worker.until(lambda s: s["connections"] == 0)
    assert stats["clients"] == [] and stats["queued_frames"] == 0 and stats["queued_bytes"] == 0
    assert stats["connections_total"] == idle["connections_total"] + 12
    assert sum(stats["closed"].values()) == 12
    assert stats["drops"]["disconnect"] == busy["queued_frames"]  # every backlog was released
    assert worker.rss() - idle_rss < 16 * 2**20
