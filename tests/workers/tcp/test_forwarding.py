"""Frames reach every other connection unchanged, whole, in order, and never the sender."""

from __future__ import annotations

import asyncio
import os
import random
import socket
from pathlib import Path

from workers.tcp.framing import build_header


async def test_one_to_many_byte_exact(spawn, connect) -> None:
    worker = spawn()
    sender, *receivers = await connect.session(worker, 4)
    frames = [(f"alice/pointcloud/{i % 3}", os.urandom(n), i) for i, n in
              enumerate([0, 1, 127, 128, 4096, 65_535, 65_536, 300_000, 3_000_001, 17])]
    wire = b"".join(build_header(s, ts, len(p)) + p for s, p, ts in frames)
    await sender.send_raw(wire)
    for receiver in receivers:  # the exact byte stream the sender wrote, frame for frame
        assert await asyncio.wait_for(receiver.reader.readexactly(len(wire)), 10) == wire
    # A frame from someone else is the first thing the sender ever receives: none of its own came back.
    await receivers[0].send("bob/audio/0", b"marker")
    assert await sender.recv_payload() == b"marker"
    stats = await worker.astats()
    assert stats["frames_in"] == len(frames) + 1 and stats["frames_out"] == 3 * len(frames) + 3
    assert stats["bytes_out"] == 3 * len(wire) + 3 * (128 + 6)
    assert stats["drops_total"] == 0 and stats["latency_ms"]["samples"] == stats["frames_out"]


async def test_frame_split_into_one_byte_sends(spawn, connect) -> None:
    worker = spawn()
    sender, receiver = await connect.session(worker, 2)
    frame = build_header("alice/audio/0", 42, 200) + os.urandom(200)
    for i in range(len(frame)):  # TCP_NODELAY and an empty buffer: every write is its own send()
        await sender.send_raw(frame[i : i + 1])
    assert await asyncio.wait_for(receiver.reader.readexactly(len(frame)), 5) == frame


async def test_random_sizes_and_split_points(spawn, connect) -> None:
    rng = random.Random(7)
    worker = spawn({"queue": {"frames": 1000}})  # about framing, not backpressure: nothing may drop
    sender, a, b = await connect.session(worker, 3)
    sizes = [rng.choice([0, 1, 200, 2_000, 60_000, 127_000, 131_072, 200_000, 700_000]) for _ in range(100)]
    wire = b"".join(build_header(f"alice/s{i % 4}/0", i, n) + rng.randbytes(n) for i, n in enumerate(sizes))

    async def send() -> None:
        pos = 0
        while pos < len(wire):  # arbitrary write boundaries, so frames straddle the worker's reads
            step = rng.choice([1, 127, 129, 5_000, 70_000, 300_000])
            await sender.send_raw(wire[pos : pos + step])
            pos += step

    _, got_a, got_b = await asyncio.wait_for(asyncio.gather(
        send(), a.reader.readexactly(len(wire)), b.reader.readexactly(len(wire))), 20)
    assert got_a == wire and got_b == wire
    assert (await worker.astats())["drops_total"] == 0


async def test_zero_length_payload(spawn, connect) -> None:
    worker = spawn()
    sender, receiver = await connect.session(worker, 2)
    await sender.send("alice/control/0", b"")
    await sender.send("alice/audio/0", b"after")
    header, payload = await receiver.recv_frame()
    assert header == build_header("alice/control/0", 0, 0) and payload == b""
    assert await receiver.recv_payload() == b"after"


async def test_concurrent_senders_never_interleave(spawn, connect) -> None:
    worker = spawn()
    a, b, receiver = await connect.session(worker, 3)
    big = {name: os.urandom(2_000_000) for name in ("a", "b")}

    async def send_all(client, name: str) -> None:
        for i in range(5):  # large frames so both senders' bytes arrive at the worker interleaved
            await client.send(f"{name}/pointcloud/0", big[name][i:] + big[name][:i], timestamp=i)

    await asyncio.gather(send_all(a, "a"), send_all(b, "b"))
    got: dict[str, list[int]] = {"a": [], "b": []}
    for _ in range(10):
        header, payload = await receiver.recv_frame(10)
        name, ts = header.split(b",")[1].decode()[0], int(header.split(b",")[2])
        assert payload == big[name][ts:] + big[name][:ts]
        got[name].append(ts)
    assert got == {"a": [0, 1, 2, 3, 4], "b": [0, 1, 2, 3, 4]}  # whole and in order per sender


async def test_stats_and_health_endpoints(spawn, connect) -> None:
    worker = spawn()
    clients = await connect.session(worker, 2)
    await clients[0].send("alice/audio/0", b"x" * 10)
    await clients[1].recv_frame()
    stats = await worker.astats()
    for key in ("connections", "connections_total", "frames_in", "bytes_in", "frames_out", "bytes_out",
                "drops", "drops_total", "closed", "queued_frames", "queued_bytes", "latency_ms", "clients"):
        assert key in stats, key
    assert stats["connections"] == 2 and stats["bytes_in"] == 138 and stats["bytes_out"] == 138
    assert stats["latency_ms"]["p99_ms"] is not None and stats["latency_ms"]["p99_ms"] < 1000
    readme = (Path(__file__).parents[3] / "workers" / "tcp" / "README.md").read_text()
    documented = [*stats, *stats["drops"], *stats["closed"], *stats["latency_ms"], *stats["clients"][0]]
    assert [key for key in documented if f"`{key}`" not in readme] == []
    with socket.create_connection(("127.0.0.1", worker.control_port), timeout=2) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = s.makefile("rb").read()
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and b'"status": "ok"' in reply
    with socket.create_connection(("127.0.0.1", worker.control_port), timeout=2) as s:
        s.sendall(b"GET /nope HTTP/1.1\r\n\r\n")
        assert s.makefile("rb").read().startswith(b"HTTP/1.1 404")
    with socket.create_connection(("127.0.0.1", worker.control_port), timeout=2) as s:
        s.sendall(b"POST /stats HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        assert s.makefile("rb").read().startswith(b"HTTP/1.1 405")
