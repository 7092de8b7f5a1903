"""A packager-shaped live stream through the relay: 30 fps, presignalled segments, three readers.

Shaped like the native lldash packager: an empty POST first, the MPD re-posted at every segment, an
init segment, each segment opened before its data exists and starting with a 24-byte `styp` box,
one fMP4 fragment per frame as one chunk, and DELETE of segments older than a window (15 s in
production, shortened here).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import struct

import httpx

FPS = 30
FRAMES_PER_SEGMENT = 10
SEGMENTS = 9  # 3 s of stream
WINDOW_S = 1.0  # delete segments older than this
SEG0 = 1_700_000_000  # segment numbers are large in the real packager
SEG_S = FRAMES_PER_SEGMENT / FPS
STYP = struct.pack(">I4s4sI4s4s", 24, b"styp", b"msdh", 0, b"msdh", b"dash")
INIT = struct.pack(">I4s", 1032, b"ftyp") + bytes(range(256)) * 4 + struct.pack(">I4s", 8, b"moov")


def fragment(n: int, f: int) -> bytes:
    rng = random.Random(n * 1000 + f)
    size = rng.randrange(8_000, 24_000)
    return struct.pack(">I4s", size + 8, b"moof") + rng.randbytes(size)


def segment(n: int) -> bytes:
    return STYP + b"".join(fragment(n, f) for f in range(FRAMES_PER_SEGMENT))


def mpd(n: int) -> bytes:
    return f'<MPD type="dynamic"><SegmentTemplate startNumber="{n}" duration="{SEG_S}"/></MPD>'.encode()


class Packager:
    def __init__(self, client: httpx.AsyncClient, base: str):
        self.c, self.base = client, base
        self.queues: dict[int, asyncio.Queue] = {}
        self.uploads: dict[int, asyncio.Task] = {}
        self.sent_at: dict[tuple[int, int], float] = {}

    def seg_path(self, n: int) -> str:
        return f"{self.base}0/0-{n}.m4s"

    def presignal(self, n: int) -> None:
        q: asyncio.Queue = asyncio.Queue()

        async def body():
            while (piece := await q.get()) is not None:
                yield piece

        self.queues[n] = q
        self.uploads[n] = asyncio.create_task(self.c.post(self.seg_path(n), content=body()))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        assert (await self.c.post(self.base.rsplit("/", 2)[0] + "/", content=b"")).status_code == 200
        assert (await self.c.post(self.base + "pc.mpd", content=mpd(SEG0))).status_code == 200
        assert (await self.c.post(self.base + "0/0-init.mp4", content=INIT)).status_code == 200
        self.presignal(SEG0)
        t0 = loop.time()
        for i in range(SEGMENTS):
            n = SEG0 + i
            self.presignal(n + 1)  # the next segment is opened before it has any data
            await self.c.post(self.base + "pc.mpd", content=mpd(n))
            self.queues[n].put_nowait(STYP)
            for f in range(FRAMES_PER_SEGMENT):
                await asyncio.sleep(max(0.0, t0 + (i * FRAMES_PER_SEGMENT + f) / FPS - loop.time()))
                self.sent_at[(n, f)] = loop.time()
                self.queues[n].put_nowait(fragment(n, f))
            self.queues[n].put_nowait(None)
            assert (await self.uploads.pop(n)).status_code == 200
            old = n - int(WINDOW_S / SEG_S) - 1
            if old >= SEG0:
                assert (await self.c.delete(self.seg_path(old))).status_code == 200
        self.queues[SEG0 + SEGMENTS].put_nowait(None)  # close the last presignalled segment
        await self.uploads.pop(SEG0 + SEGMENTS)


async def read_stream(c: httpx.AsyncClient, base: str, packager: Packager, latencies: list[float]) -> int:
    loop = asyncio.get_running_loop()
    r = await c.get(base + "pc.mpd")
    assert r.status_code == 200
    n = int(r.text.split('startNumber="')[1].split('"')[0])
    assert (await c.get(base + "0/0-init.mp4")).content == INIT
    count = 0
    while n < SEG0 + SEGMENTS:
        ends = [len(STYP)]
        for f in range(FRAMES_PER_SEGMENT):
            ends.append(ends[-1] + len(fragment(n, f)))
        got, frame = bytearray(), 0
        async with c.stream("GET", packager.seg_path(n)) as resp:
            assert resp.status_code == 200
            async for data in resp.aiter_raw():
                got += data
                while frame < FRAMES_PER_SEGMENT and len(got) >= ends[frame + 1]:
                    latencies.append(loop.time() - packager.sent_at[(n, frame)])
                    frame += 1
        assert bytes(got) == segment(n), f"segment {n} differs"
        count += 1
        n += 1
    return count


async def test_packager_replay_three_readers(worker, ns):
    base = ns + "pointcloud/"
    limits = httpx.Limits(max_connections=50)
    peak = 0
    async with httpx.AsyncClient(base_url=worker.base, timeout=10, limits=limits) as c:
        before = (await c.get("/stats")).json()
        packager = Packager(c, base)
        writer = asyncio.create_task(packager.run())
        latencies: list[float] = []
        readers = []
        for k in range(3):  # readers join at different moments, like users entering a session
            await asyncio.sleep(0.15 if k else 0.05)
            readers.append(asyncio.create_task(read_stream(c, base, packager, latencies)))

        async def monitor():
            nonlocal peak
            while True:
                peak = max(peak, (await c.get("/stats")).json()["bytes_stored"])
                await asyncio.sleep(0.05)

        mon = asyncio.create_task(monitor())
        await writer
        counts = await asyncio.gather(*readers)
        mon.cancel()
        after = (await c.get("/stats")).json()
    assert all(k >= SEGMENTS - 2 for k in counts), counts  # each reader got every segment from its start
    assert sum(counts) * FRAMES_PER_SEGMENT == len(latencies)
    # streamed frame by frame, not segment by segment (a segment lasts 333 ms)
    assert statistics.median(latencies) < 0.1, statistics.median(latencies)
    # memory bounded by the live window: the kept segments, the open ones, init, MPD and bookkeeping
    max_segment = max(len(segment(SEG0 + i)) for i in range(SEGMENTS))
    bound = (WINDOW_S / SEG_S + 3) * max_segment + len(INIT) + 2000 + 64 * 20 * FRAMES_PER_SEGMENT + 12 * 1200
    assert 0 < peak <= bound, (peak, bound)
    assert after["aborted_uploads"] == before["aborted_uploads"]
    assert after["drops"].get("reader_aborted", 0) == before["drops"].get("reader_aborted", 0)


async def test_hundred_concurrent_readers_share_one_upload(spawn, ns):
    wk = spawn({"long_poll_ms": 10000})
    path = ns + "fanout.m4s"
    frames = [fragment(7, f) for f in range(10)]
    async with httpx.AsyncClient(base_url=wk.base, timeout=10, limits=httpx.Limits(max_connections=200)) as c:

        async def read() -> bytes:
            async with c.stream("GET", path) as resp:
                assert resp.status_code == 200
                return b"".join([d async for d in resp.aiter_raw()])

        readers = [asyncio.create_task(read()) for _ in range(120)]
        for _ in range(500):  # until all 120 are long-polling a resource that does not exist yet
            if (await c.get("/stats")).json()["long_poll_waiters"] == 120:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("readers did not all start long-polling")

        async def body():
            for fr in frames:
                yield fr

        assert (await c.post(path, content=body())).status_code == 200
        results = await asyncio.gather(*readers)
        s = (await c.get("/stats")).json()
    assert all(r == b"".join(frames) for r in results)
    assert s["bytes_out"] == 120 * sum(map(len, frames)) and s["bytes_in"] == sum(map(len, frames))
