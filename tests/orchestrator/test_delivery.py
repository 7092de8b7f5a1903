"""Slow consumers, per-client ordering, transports and the Engine.IO internals delivery relies on."""

from __future__ import annotations

import asyncio

import engineio
import psutil
import pytest
import socketio
from rawclient import RawClient

from orchestrator.client import OrchestratorClient
from orchestrator.delivery import MeteredQueue

SCENARIO = {"scenarioId": "s", "scenarioName": "s", "scenarioDescription": ""}


async def pair(url_or_server, receiver_max_queue: int = 16):
    """A sender (client library) and a raw receiver registered for its stream, in one session."""
    sender = OrchestratorClient(url_or_server.url)
    await sender.connect()
    await sender.login("sender")
    session = await sender.add_session("s")
    receiver = await RawClient.connect(url_or_server.ws_url, max_queue=receiver_max_queue)
    await receiver.command("Login", {"userName": "receiver"})
    await receiver.command("JoinSession", {"sessionId": session["sessionId"]})
    kind = f"{sender.user_id}.pointcloud#0"
    ack_id = receiver.next_id
    receiver.next_id += 1
    await receiver.ws.send(f'42{ack_id}["RegisterForDataStream","{sender.user_id}","{kind}"]')
    await receiver.wait_ack(ack_id)
    return sender, receiver, session, kind


async def test_slow_consumer_is_bounded_and_others_unaffected(server_factory):
    srv = server_factory("--data-queue-frames", "8", "--data-queue-bytes", str(4 << 20),
                         "--data-rate-bytes", str(1 << 30), "--data-burst-bytes", str(1 << 30))
    sender, slow, session, kind = await pair(srv)
    fast = OrchestratorClient(srv.url)
    await fast.connect()
    await fast.login("fast")
    await fast.join_session(session["sessionId"])
    await fast.register_for_data_stream(sender.user_id, kind)
    process = psutil.Process(srv.proc.pid)
    rss_before = process.memory_info().rss
    frames = 200
    payload = b"\x5a" * 500_000  # 100 MB in all, far more than the budget
    got = []
    for i in range(frames):  # paced by the reader that keeps up: it must get every frame, in order
        await sender.send_data(kind, i.to_bytes(8, "little") + payload)
        _, (_, _, data) = await fast.next_event("DataReceived", timeout_s=10)
        got.append(int.from_bytes(data[:8], "little"))
    assert got == list(range(frames))
    growth = process.memory_info().rss - rss_before
    assert growth < 60 << 20, f"server grew {growth >> 20} MiB for a stalled reader"
    # The stalled reader resumes: it gets a bounded tail that ends with the newest frame.
    received = []
    while True:
        try:
            event, args = await slow.next_event(timeout=2)
        except TimeoutError:
            break
        if event == "DataReceived":
            received.append(int.from_bytes(args[2][:8], "little"))
    assert received and received[-1] == frames - 1
    assert len(received) < frames and received == sorted(received)
    # Control events still flow to it afterwards.
    await sender.send_message_to_all("after")
    event, args = await slow.next_event()
    assert event == "MessageSent" and args[0]["message"] == "after"
    await sender.disconnect()
    await fast.disconnect()


async def test_client_that_never_reads_is_disconnected(server_factory):
    srv = server_factory("--max-outgoing-bytes", str(2 << 20))
    sender, _stalled, _, _ = await pair(srv)
    big = "m" * 200_000
    for _ in range(60):  # 12 MB of control events that the stalled client never reads
        await sender.send_message_to_all(big)
    await asyncio.sleep(0.5)
    info = await sender.get_session_info()
    deadline = asyncio.get_running_loop().time() + 10
    while len(info["sessionUsers"]) > 1 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.2)
        info = await sender.get_session_info()
    assert info["sessionUsers"] == [sender.user_id]
    assert "not reading" in srv.log()
    # Its TCP connection is closed by the server at once, not left open until a ping timeout.
    server_process = psutil.Process(srv.proc.pid)
    established = [c for c in server_process.net_connections("tcp")
                   if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == srv.port]
    assert len(established) == 1  # the sender's
    await sender.disconnect()


async def test_stale_frames_give_way_to_newer_ones(server_factory):
    srv = server_factory("--data-max-age-s", "0.3", "--data-queue-frames", "1000",
                         "--data-queue-bytes", str(1 << 30), "--data-rate-bytes", str(1 << 30),
                         "--data-burst-bytes", str(1 << 30))
    sender, stalled, _, kind = await pair(srv, receiver_max_queue=1)  # its library holds one frame
    for i in range(30):  # 30 MB, 1 MB every 50 ms, to a client that is not reading
        await sender.send_data(kind, i.to_bytes(8, "little") + b"\x33" * 1_000_000)
        await asyncio.sleep(0.05)
    received = []
    while True:
        try:
            event, args = await stalled.next_event(timeout=2)
        except TimeoutError:
            break
        if event == "DataReceived":
            received.append(int.from_bytes(args[2][:8], "little"))
    assert received[-1] == 29 and received == sorted(received)
    assert len(received) < 30  # frames older than 0.3 s were dropped instead of queued
    status, _ = await asyncio.to_thread(http_get_text, f"{srv.url}/metrics")
    assert 'orchestrator_data_frames_dropped_total{reason="stale"}' in status
    await sender.disconnect()


def http_get_text(url: str) -> tuple[str, int]:
    import urllib.request
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode(), response.status


async def test_one_clients_events_keep_their_order(server):
    sender, receiver, _, kind = await pair(server)
    for i in range(30):  # data frames (no ack) interleaved with acked commands
        await sender.send_data(kind, i.to_bytes(4, "little"))
        await sender.send_message_to_all(f"m{i}")
    seen = []
    while len(seen) < 60:
        event, args = await receiver.next_event()
        if event == "DataReceived":
            seen.append(("d", int.from_bytes(args[2], "little")))
        elif event == "MessageSent":
            seen.append(("m", int(args[0]["message"][1:])))
    assert seen == [x for i in range(30) for x in (("d", i), ("m", i))]
    await sender.disconnect()


async def test_polling_transport_works(server):
    a = OrchestratorClient(server.url, transports=["polling"])
    b = OrchestratorClient(server.url)
    await a.connect()
    await b.connect()
    await a.login("browser")
    await b.login("unity")
    session = await a.add_session("poll")
    await b.join_session(session["sessionId"])
    await a.register_for_data_stream(b.user_id, "k")
    await b.send_data("k", b"\x00\xffbinary over polling")
    _, (_, _, data) = await a.next_event("DataReceived")
    assert data == b"\x00\xffbinary over polling"
    await a.disconnect()
    await b.disconnect()


async def test_environment_variables_configure_serve(server_factory):
    srv = server_factory(env={"ORCHESTRATOR_MAX_NAME_LENGTH": "5"})
    async with OrchestratorClient(srv.url) as client:
        from orchestrator.client import OrchestratorError
        with pytest.raises(OrchestratorError) as err:
            await client.login("toolongname")
        assert err.value.code == 5005
        assert await client.login("short")


def test_engineio_internals_delivery_relies_on():
    """Delivery replaces each socket's queue via AsyncServer.create_queue and finds it in .sockets."""
    sio = socketio.AsyncServer(async_mode="asgi")
    assert isinstance(sio.eio, engineio.AsyncServer)
    assert callable(sio.eio.create_queue) and isinstance(sio.eio.sockets, dict)
    from orchestrator.delivery import Delivery
    from orchestrator.settings import Settings
    from orchestrator.stats import Stats
    Delivery(sio, Settings(), Stats())
    from engineio.async_socket import AsyncSocket

    from orchestrator.delivery import _fast_poll, _fast_websocket_handler, _upgrade_handler
    sock = AsyncSocket(sio.eio, "sid")
    assert isinstance(sock.queue, MeteredQueue)
    assert AsyncSocket.poll is _fast_poll  # the writer's wait, replaced (see delivery.py)
    assert AsyncSocket._websocket_handler is _fast_websocket_handler
    assert _upgrade_handler.__module__ == "engineio.async_socket"  # upgrades keep Engine.IO's loop


async def test_fast_poll_batches_and_ends():
    from engineio.async_socket import AsyncSocket

    from orchestrator.delivery import Delivery
    from orchestrator.settings import Settings
    from orchestrator.stats import Stats
    sio = socketio.AsyncServer(async_mode="asgi")
    Delivery(sio, Settings(), Stats())
    sock = AsyncSocket(sio.eio, "sid")
    for item in ("a", "b", None, "c"):
        sock.queue.put_nowait(item)
    assert await sock.poll() == ["a", "b"]
    assert await sock.poll() == ["c"]  # the end marker goes back behind what is left
    assert await sock.poll() == []  # then ends the writer
    waiter = asyncio.create_task(sock.poll())
    await asyncio.sleep(0)
    assert not waiter.done()  # an empty queue is awaited
    sock.queue.put_nowait("d")
    assert await asyncio.wait_for(waiter, 1) == ["d"]


async def test_metered_queue_drops_whole_frames():
    from orchestrator.delivery import encode_event, encode_frame
    queue = MeteredQueue()
    control = encode_event("MessageSent", ({"m": 1},))
    frame_a = encode_frame("DataReceived", ("u", "k", b"a" * 10), 10)
    frame_b = encode_frame("DataReceived", ("u", "k", b"b" * 20), 20)
    queue.put_frame(frame_a, 10)
    for pkt in control:
        queue.put_nowait(pkt)
    queue.put_frame(frame_b, 20)
    assert (queue.data_frames, queue.data_bytes, queue.qsize()) == (2, 30, 5)
    assert list(queue.frames) == [frame_a[0], frame_b[0]]
    assert queue.drop_oldest_frame()
    assert (queue.data_frames, queue.data_bytes, queue.qsize()) == (1, 20, 3)
    assert list(queue.frames) == [frame_b[0]]
    items = [queue.get_nowait() for _ in range(3)]
    assert items[0] is control[0] and items[1] is frame_b[0] and items[2] is frame_b[1]
    assert (queue.data_frames, queue.data_bytes, queue.bytes) == (0, 0, 0)
    assert not queue.frames and not queue.drop_oldest_frame()
