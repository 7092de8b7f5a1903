"""The two loads: data frames between session members (latency, CPU per frame) and control
operations (logins and joins per second), with raw Socket.IO clients from bench.loadgen."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import aiohttp
import psutil

from bench.loadgen import wire
from bench.loadgen.client import Client
from bench.loadgen.stats import summary

NS = 1_000_000_000


def cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


async def barrier(client: Client) -> None:
    """An acked change that goes through the cluster log: once answered, this client's process has
    applied everything logged before it (a subscription made through another process, say)."""
    await client.call("UpdateUserDataJson", {"userDataJson": '{"bench": 1}'})


async def data_latency(http: aiohttp.ClientSession, pairs: list[tuple[str, str]], pids: list[int], *,
                       payload: int, rate: float, duration: float, warmup: float = 1.0) -> dict:
    """Each pair: the sender adds a session, the receiver joins and registers for the sender's stream;
    senders send `rate` frames per second for `duration`. Latency is receive time - due time."""
    latencies: list[float] = []
    received = [0]
    measure_from = [1 << 62]
    all_in = asyncio.Event()  # set when every frame sent has arrived (after the senders stopped)
    sent = [0]
    sending = [True]

    def on_data(frame: bytes) -> None:
        now = time.monotonic_ns()
        received[0] += 1
        if not sending[0] and received[0] >= sent[0]:
            all_in.set()
        due = wire.HEADER.unpack_from(frame)[0]
        if due >= measure_from[0]:
            latencies.append((now - due) / 1e6)

    clients: list[tuple[Client, Client]] = []
    for i, (send_url, recv_url) in enumerate(pairs):
        sender, receiver = Client(http, send_url), Client(http, recv_url, on_data=on_data)
        await sender.open()
        await receiver.open()
        await sender.login(f"s{i}")
        await receiver.login(f"r{i}")
        sid = (await sender.call("AddSession", {"sessionName": f"b{i}", "sessionDescription": "",
                                                "sessionProtocol": "socketio",
                                                "scenarioDefinition": {"scenarioId": "b"}}))["sessionId"]
        await receiver.call("JoinSession", {"sessionId": sid})
        await receiver.emit("RegisterForDataStream", sender.user_id, "pc")
        await receiver.call("GetSessionInfo", {})  # the registration is in the log
        await barrier(sender)  # and applied where the sender's frames are routed
        clients.append((sender, receiver))
    body = b"\x00" * (payload - wire.HEADER.size)
    header = wire.binary_event("SendData", "pc")
    t0 = time.monotonic_ns() + NS // 5
    measure_from[0] = t0 + int(warmup * NS)

    async def send(index: int, sender: Client) -> None:
        interval = NS / rate
        start = t0 + (index / len(clients)) * interval
        tick = 0
        while (due := int(start + tick * interval)) < t0 + duration * NS:
            delay = (due - time.monotonic_ns()) / NS
            if delay > 0:
                await asyncio.sleep(delay)
            stamp = wire.HEADER.pack(min(due, time.monotonic_ns()), index, tick)
            await sender.send_binary(header, stamp + body)
            sent[0] += 1
            tick += 1

    cpu_before = cpu_s(pids)
    await asyncio.gather(*(send(i, s) for i, (s, _) in enumerate(clients)))
    sending[0] = False
    if received[0] < sent[0]:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_in.wait(), 5)  # the rest are lost
    cpu = cpu_s(pids) - cpu_before
    for sender, receiver in clients:
        await sender.close()
        await receiver.close()
    stats = summary(latencies)
    return {"sent": sent[0], "received": received[0], "p50_ms": stats["p50"], "p99_ms": stats["p99"],
            "cpu_s": cpu, "cpu_ms_per_frame": 1000 * cpu / max(1, received[0])}


async def control_rate(http: aiohttp.ClientSession, urls: list[str], pids: list[int], *, what: str,
                       connections: int, duration: float) -> dict:
    """Operations per second, `connections` clients each looping for `duration`:
    what="login": Login then Logout (a login is one new user in the shared state);
    what="join": JoinSession then LeaveSession on sessions made beforehand (5 members each)."""
    clients = [Client(http, urls[i % len(urls)]) for i in range(connections)]
    for client in clients:
        await client.open()
    sessions: list[str] = []
    if what == "join":
        for i, client in enumerate(clients):
            await client.login(f"j{i}")
        for i in range(0, connections, 5):
            admin = Client(http, urls[(i // 5) % len(urls)])
            await admin.open()
            await admin.login(f"admin{i}")
            clients.append(admin)
            sessions.append((await admin.call("AddSession", {
                "sessionName": f"j{i}", "sessionDescription": "", "sessionProtocol": "socketio",
                "scenarioDefinition": {"scenarioId": "j"}}))["sessionId"])
    done = [0]
    end = time.monotonic() + duration

    def cycle(i: int, client: Client) -> Callable[[], object]:
        async def login() -> None:
            await client.login(f"l{i}")
            await client.call("Logout", {})

        async def join() -> None:
            await client.call("JoinSession", {"sessionId": sessions[i // 5]})
            await client.call("LeaveSession", {})
        return login if what == "login" else join

    async def loop(i: int, client: Client) -> None:
        step = cycle(i, client)
        while time.monotonic() < end:
            await step()
            done[0] += 1

    cpu_before = cpu_s(pids)
    started = time.monotonic()
    await asyncio.gather(*(loop(i, c) for i, c in enumerate(clients[:connections])))
    elapsed = time.monotonic() - started
    cpu = cpu_s(pids) - cpu_before
    for client in clients:
        await client.close()
    return {"per_s": done[0] / elapsed, "cpu_ms_per_op": 1000 * cpu / max(1, done[0]), "cycles": done[0]}
