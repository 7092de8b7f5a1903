"""One generator process: background clients in sessions, each streaming SendData to its peers.

The coordinator (row.py) starts several of these with multiprocessing when N is large and talks
to each over a Pipe: the process sets its sessions up and says ("ready", info); the coordinator
answers ("go", t0_ns); the process sends from t0 for the duration, stops, waits the drain period
so in-flight frames are not counted as drops, then sends ("report", tally) and closes its
connections on ("exit",).

Timestamps are CLOCK_MONOTONIC nanoseconds (system-wide on Linux, so comparable between the
processes of one machine). Each frame carries the time it was *due*, not the time the write
happened, so a sender held back by a congested socket shows up as latency instead of hiding it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import resource
import time
from array import array
from collections import Counter
from dataclasses import asdict, dataclass

import aiohttp

from . import wire
from .client import Client

NS = 1_000_000_000


@dataclass(frozen=True)
class LoadSpec:
    """Everything one row of the benchmark asks of the generator."""

    url: str
    clients: int
    session_size: int = 2
    payload: int = 50 * 1024
    rate: float = 1.0  # SendData per second per client; 0 = idle clients
    duration: float = 30.0
    warmup: float = 2.0  # latencies of frames due in the first seconds are not recorded
    drain: float = 5.0
    ramp: int = 32  # sessions being set up at once, over all generator processes
    processes: int = 1


def session_groups(clients: int, size: int) -> list[range]:
    """Client indices grouped into sessions; the last one may be smaller."""
    return [range(i, min(i + size, clients)) for i in range(0, clients, size)]


def raise_fd_limit() -> int:
    """Lift the soft open-file limit to the hard one: thousands of sockets per process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Tally:
    """What one generator process counted; plain numbers so it pickles cheaply."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.sent = self.skipped = self.expected = self.received = self.out_of_order = 0
        self.latency_us = array("q")
        self.due_s = array("H")  # second of the window each latency sample was due in
        self.errors: Counter[str] = Counter()
        self.measure_from = self.t0 = 1 << 62
        self.closing = False

    def error(self, what: str) -> None:
        self.errors[what[:160]] += 1

    def report(self, **extra: object) -> dict:
        return {
            "sent": self.sent,
            "skipped": self.skipped,
            "expected": self.expected,
            "received": self.received,
            "out_of_order": self.out_of_order,
            "latency_us": self.latency_us.tobytes(),
            "due_s": self.due_s.tobytes(),
            "errors": dict(self.errors),
            **extra,
        }


class Member:
    """A background client: receives its peers' streams and sends its own."""

    def __init__(self, http: aiohttp.ClientSession, index: int, tally: Tally) -> None:
        self.index, self.tally, self.peers, self.closing = index, tally, 0, False
        self.last_seq: dict[int, int] = {}
        self.client = Client(http, tally.spec.url, on_data=self.on_data, on_close=self.on_close)

    @property
    def stream(self) -> str:
        return f"{self.client.user_id}.pointcloud#0"

    def on_data(self, frame: bytes) -> None:
        now = time.monotonic_ns()
        tally = self.tally
        if len(frame) != tally.spec.payload:
            tally.error(f"DataReceived frame of {len(frame)} bytes")
            return
        due, sender, seq = wire.HEADER.unpack_from(frame)
        tally.received += 1
        if seq <= self.last_seq.get(sender, -1):
            tally.out_of_order += 1
        else:
            self.last_seq[sender] = seq
        if due >= tally.measure_from:
            tally.latency_us.append((now - due) // 1000)
            tally.due_s.append((due - tally.t0) // NS)

    def on_close(self) -> None:
        if not (self.closing or self.tally.closing):
            self.tally.error("connection closed by the server")

    async def send(self, t0: int, body: bytes) -> None:
        """Send at the fixed rate from t0 (with a per-client phase); skip ticks a blocked socket missed."""
        spec, tally = self.tally.spec, self.tally
        interval = NS / spec.rate
        start, end = t0 + random.Random(self.index).random() * interval, t0 + int(spec.duration * NS)
        header, tick = wire.binary_event("SendData", self.stream), 0
        while (due := int(start + tick * interval)) < end:
            now = time.monotonic_ns()
            if due > now:
                await asyncio.sleep((due - now) / NS)
            elif now - due >= interval:
                missed = int((now - due) // interval)
                tick, tally.skipped = tick + missed, tally.skipped + missed
                continue
            stamp = min(due, time.monotonic_ns())  # a timer that fires early must not shorten latency
            try:
                await self.client.send_binary(header, wire.HEADER.pack(stamp, self.index, tick) + body)
            except Exception as exc:
                tally.error(f"SendData: {exc!r}")
                return
            tally.sent += 1
            tally.expected += self.peers
            tick += 1


def session_spec(index: int) -> dict:
    name = f"bench-{index}"
    return {
        "sessionName": name,
        "sessionDescription": "messaging benchmark",
        "sessionProtocol": "socketio",
        "scenarioDefinition": {"scenarioId": "bench", "scenarioName": name, "scenarioDescription": ""},
    }


async def setup_session(http: aiohttp.ClientSession, group: range, tally: Tally) -> list[Member]:
    """Like Unity: first member logs in and adds the session, the others join; all register."""
    members = [Member(http, index, tally) for index in group]
    try:
        session_id = ""
        for member in members:
            await member.client.open()
            await member.client.login(f"bench-{member.index}")
            if not session_id:
                session_id = (await member.client.call("AddSession", session_spec(member.index)))["sessionId"]
            else:
                await member.client.call("JoinSession", {"sessionId": session_id})
        for member in members:
            for peer in members:
                if peer is not member:
                    await member.client.emit("RegisterForDataStream", peer.client.user_id, peer.stream)
                    member.peers += 1
        for member in members:  # an acked round trip after the registrations: they are in place
            users = (await member.client.call("GetSessionInfo", {})).get("sessionUsers", [])
            if len(users) != len(members):
                raise RuntimeError(f"session has {len(users)} users, expected {len(members)}")
    except Exception:
        for member in members:
            member.closing = True
        await asyncio.gather(*(m.client.close() for m in members), return_exceptions=True)
        raise
    return members


async def sleep_until(t_ns: int) -> None:
    await asyncio.sleep(max(0.0, (t_ns - time.monotonic_ns()) / NS))


async def loop_lag(samples: list[float], period: float = 0.05) -> None:
    """How late this process's event loop wakes up: the generator's own saturation signal."""
    while True:
        before = time.monotonic()
        await asyncio.sleep(period)
        samples.append((time.monotonic() - before - period) * 1000)


async def run(pipe, spec: LoadSpec, groups: list[range], ramp: int) -> None:
    tally, members, gate = Tally(spec), [], asyncio.Semaphore(max(1, ramp))

    async def one(group: range) -> None:
        async with gate:
            members.extend(await setup_session(http, group, tally))

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as http:
        started = time.monotonic()
        for outcome in await asyncio.gather(*(one(g) for g in groups), return_exceptions=True):
            if isinstance(outcome, BaseException):
                tally.error(f"session setup: {outcome!r}")
        pipe.send(("ready", {"clients": len(members), "setup_s": time.monotonic() - started}))
        command = await asyncio.to_thread(pipe.recv)
        extra: dict = {}
        if command[0] == "go":
            t0 = command[1]
            end = t0 + int(spec.duration * NS)
            tally.t0, tally.measure_from = t0, t0 + int(spec.warmup * NS)
            body = os.urandom(max(0, spec.payload - wire.HEADER.size))
            lags: list[float] = []
            await sleep_until(t0)
            lag_task = asyncio.create_task(loop_lag(lags))
            cpu0 = time.process_time()
            if spec.rate > 0:
                await asyncio.gather(*(m.send(t0, body) for m in members))
            await sleep_until(end)
            cpu = time.process_time() - cpu0
            lag_task.cancel()
            await sleep_until(end + int(spec.drain * NS))
            extra = {"cpu_s": cpu, "window_s": spec.duration, "loop_lag_ms": lags}
        tally.closing = True
        pipe.send(("report", tally.report(clients=len(members), **extra)))
        with contextlib.suppress(EOFError):
            await asyncio.to_thread(pipe.recv)
        await asyncio.gather(*(m.client.close() for m in members), return_exceptions=True)


def worker_main(pipe, spec_fields: dict, groups: list[tuple[int, int]], ramp: int) -> None:
    """Process entry point (spawned): plain arguments in, uvloop inside."""
    import uvloop

    raise_fd_limit()
    spec = LoadSpec(**spec_fields)
    uvloop.run(run(pipe, spec, [range(a, b) for a, b in groups], ramp))


def spec_fields(spec: LoadSpec) -> dict:
    return asdict(spec)
