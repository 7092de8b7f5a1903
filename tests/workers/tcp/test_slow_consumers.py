"""A receiver that stops reading costs only itself: others get everything, memory stays bounded."""

from __future__ import annotations

import asyncio
import contextlib
import re

PC = 256 * 1024
N = 400


async def read_all(client, count: int) -> list[tuple[str, int]]:
    got = []
    for _ in range(count):
        header, payload = await client.recv_frame(10)
        fields = header.split(b",")
        stream, seq = fields[1].decode(), int(fields[2])
        assert payload == bytes([seq % 251]) * len(payload), "payload corrupted"
        got.append((stream, seq))
    return got


async def send_in_step(sender, fast, count: int, size: int, audio: bool = False) -> list[tuple[str, int]]:
    """Send as fast as ``fast`` takes frames (a receiver that keeps up), returning what it got."""
    got = []
    for seq in range(count):
        await sender.send("alice/pointcloud/0", bytes([seq % 251]) * size, timestamp=seq)
        if audio:
            await sender.send("alice/audio/0", bytes([seq % 251]) * 960, timestamp=seq)
        got += await read_all(fast, 2 if audio else 1)
    return got


async def sample_rss(worker, peak: list[int]) -> None:
    while True:
        peak[0] = max(peak[0], worker.rss())
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def rss_peak(worker):
    peak = [worker.rss()]
    task = asyncio.create_task(sample_rss(worker, peak))
    try:
        yield peak
    finally:
        task.cancel()


async def test_stalled_receiver_costs_only_itself(spawn, connect) -> None:
    worker = spawn({"lag_disconnect_s": 60, "queue": {"frames": 10}})
    idle_rss = worker.rss()
    sender, fast = await connect.session(worker, 2)
    slow = (await connect.session(worker, 1, rcvbuf=16384))[0]  # never reads until told to
    async with rss_peak(worker) as peak:
        received = await send_in_step(sender, fast, N, PC, audio=True)
    expected = [(s, seq) for seq in range(N) for s in ("alice/pointcloud/0", "alice/audio/0")]
    assert received == expected  # 100 % to the receiver that keeps up, in order
    grown = peak[0] - idle_rss
    assert grown < 40 * 2**20, f"worker RSS grew {grown / 2**20:.0f} MiB for {N * PC / 2**20:.0f} MiB sent"
    stats = await worker.astats()
    assert stats["drops"]["queue_frames"] > 0 and stats["drops"]["disconnect"] == 0
    stalled = max(stats["clients"], key=lambda c: c["dropped"])
    assert stalled["queued_frames"] <= 20 and stalled["paused"]

    # It resumes: its backlog is bounded, whole, in order, and its audio is served before point clouds.
    frames, order = {"alice/pointcloud/0": [], "alice/audio/0": []}, []
    while frames["alice/audio/0"][-1:] != [N - 1] or frames["alice/pointcloud/0"][-1:] != [N - 1]:
        for stream, seq in await read_all(slow, 1):
            frames[stream].append(seq)
            order.append((stream, seq))
    for seqs in frames.values():
        assert seqs == sorted(seqs) and len(seqs) < N  # in order, and old frames were dropped
    assert order.index(("alice/audio/0", N - 1)) < order.index(("alice/pointcloud/0", N - 1))
    final = await worker.astats()
    assert final["queued_frames"] == 0 and final["connections"] == 3


async def test_drop_newest_keeps_the_oldest(spawn, connect) -> None:
    worker = spawn({"lag_disconnect_s": 60, "summary_interval_s": 0.2,
                    "queue": {"frames": 3, "drop": "newest"}})
    sender = (await connect.session(worker, 1))[0]
    slow = (await connect.session(worker, 1, rcvbuf=16384))[0]
    for seq in range(60):
        await sender.send("alice/pointcloud/0", bytes([seq % 251]) * PC, timestamp=seq)
    stats = await worker.until(lambda s: s["frames_in"] == 60)
    seqs = [seq for _, seq in await read_all(slow, 60 - stats["drops_total"])]
    assert seqs == sorted(seqs) and seqs[-1] < 59  # the latest frames were the ones refused
    # Drops are counted and summarised every summary_interval_s, never logged one by one.
    def summarised() -> list[int]:
        return [int(n) for n in re.findall(r"dropped (\d+) frames in the last", worker.log())]

    await worker.until(lambda s: sum(summarised()) == stats["drops_total"])
    assert len(summarised()) < 10 < stats["drops_total"]


async def test_lagging_receiver_is_disconnected(spawn, connect) -> None:
    worker = spawn({"lag_disconnect_s": 0.5})
    sender, fast = await connect.session(worker, 2)
    slow = (await connect.session(worker, 1, rcvbuf=16384))[0]
    assert len(await send_in_step(sender, fast, 30, 1_000_000)) == 30
    stats = await worker.until(lambda s: s["closed"]["lagging"] == 1, timeout=5)
    assert stats["connections"] == 2 and stats["drops"]["disconnect"] > 0
    await slow.closed_by_peer()  # what was in flight, then the end of the connection
    await sender.send("alice/audio/0", b"still fine")
    assert await fast.recv_payload() == b"still fine"
