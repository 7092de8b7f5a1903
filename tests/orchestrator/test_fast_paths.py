"""The WebSocket fast paths: events handled as they are parsed, packets written straight to the transport.

Every test here runs against a real `orchestrator serve` process (or a real loopback socket) and checks
what a client sees: order, acks, unusual frames handed to Socket.IO, polling and WebSocket recipients
of the same frame, and a consumer that stops reading and then catches up.
"""

from __future__ import annotations

import asyncio
import inspect
import json

import pytest
from engineio import packet as eio_packet

from orchestrator.client import OrchestratorClient
from orchestrator.delivery import MeteredQueue, _flush_waiting, encode_event, encode_frame
from orchestrator.wire import DirectSink, ws_frame

SCENARIO = {"scenarioId": "s", "scenarioName": "s", "scenarioDescription": ""}


async def streaming_pair(raw):
    """A raw sender and a raw receiver in one session, the receiver registered for the sender's stream."""
    sender, receiver = await raw(), await raw()
    sender_id = (await sender.command("Login", {"userName": "s"}))["body"]["userId"]
    await receiver.command("Login", {"userName": "r"})
    session = (await sender.command("AddSession", {"sessionName": "s", "sessionDescription": "",
                                                   "sessionProtocol": "socketio",
                                                   "scenarioDefinition": SCENARIO}))["body"]
    await receiver.command("JoinSession", {"sessionId": session["sessionId"]})
    kind = f"{sender_id}.pointcloud#0"
    ack_id = receiver.next_id
    receiver.next_id += 1
    await receiver.ws.send(f'42{ack_id}["RegisterForDataStream","{sender_id}","{kind}"]')
    await receiver.wait_ack(ack_id)
    return sender, receiver, sender_id, kind


def send_together(client, *messages: str | bytes) -> None:
    """Several WebSocket messages in one TCP write, so that the server parses them in one go."""
    protocol = client.ws.protocol
    for message in messages:
        if isinstance(message, str):
            protocol.send_text(message.encode())
        else:
            protocol.send_binary(message)
    client.ws.transport.write(b"".join(protocol.data_to_send()))


async def events_until(receiver, count, names=("DataReceived", "MessageSent")):
    seen = []
    while len(seen) < count:
        event, args = await receiver.next_event()
        if event in names:
            seen.append((event, args))
    return seen


async def test_data_and_commands_of_one_client_keep_their_order(raw):
    sender, receiver, _, kind = await streaming_pair(raw)
    # They arrive together: the message goes to the reader, and the data
    # frame after it must wait for it rather than be handled on the spot.
    header = f'451-["SendData","{kind}",{{"_placeholder":true,"num":0}}]'
    send_together(sender, header, b"first", '42["SendMessageToAll",{"message":"between"}]', header, b"second")
    seen = await events_until(receiver, 3)
    assert [(event, args[-1] if event == "DataReceived" else args[0]["message"]) for event, args in seen] \
        == [("DataReceived", b"first"), ("MessageSent", "between"), ("DataReceived", b"second")]


async def test_data_after_leaving_is_not_delivered(raw):
    sender, receiver, _, kind = await streaming_pair(raw)
    header = f'451-["SendData","{kind}",{{"_placeholder":true,"num":0}}]'
    send_together(sender, '42["LeaveSession",{}]', header, b"too late")
    event, _ = await receiver.next_event()
    assert event == "SessionUpdated"  # the leave; then nothing else
    with pytest.raises(TimeoutError):
        await receiver.next_event(timeout=0.5)


async def test_acked_send_data_gets_its_envelope(raw):
    sender, receiver, sender_id, kind = await streaming_pair(raw)
    ack_id = await sender.send_binary_event("SendData", kind, payload=b"\x00\x01", ack=True)
    assert (await sender.wait_ack(ack_id))["error"] == 0
    event, args = await receiver.next_event()
    assert (event, args) == ("DataReceived", [sender_id, kind, b"\x00\x01"])
    stranger = await raw()
    ack_id = await stranger.send_binary_event("SendData", "k", payload=b"x", ack=True)
    assert (await stranger.wait_ack(ack_id))["error"] == 5001  # not logged in


@pytest.mark.parametrize("header, attachments", [
    ('451-["SendData",{{"_placeholder":true,"num":0}},"{kind}"]', [b"swapped"]),  # placeholder first
    ('452-["SendData","{kind}",{{"_placeholder":true,"num":1}}]', [b"a", b"b"]),  # two attachments
    ('451-["SendData","{kind}",{{"_placeholder":true,"num":0}}]', ["4an Engine.IO text message"]),
    ('451-["SendData","{kind}",{{"_placeholder":true,"num":0}},{{"extra":1}}]', [b"extra arg"]),
    ('451-/other,["SendData","{kind}",{{"_placeholder":true,"num":0}}]', [b"other namespace"]),
])
async def test_unusual_binary_events_get_socketio_handling_and_the_connection_lives(raw, header,
                                                                                    attachments):
    sender, receiver, _, kind = await streaming_pair(raw)
    await sender.ws.send(header.format(kind=kind))
    for attachment in attachments:
        await sender.ws.send(attachment)
    await sender.send_binary_event("SendData", kind, payload=b"after")
    ack = await sender.command("GetNTPTime", {})
    assert ack["error"] == 0
    while True:  # whatever the odd frame did, the normal frame after it arrives intact
        event, args = await receiver.next_event()
        if event == "DataReceived" and args[-1] == b"after":
            break


async def test_one_frame_reaches_websocket_and_polling_members_intact(server, raw):
    sender, ws_receiver, sender_id, kind = await streaming_pair(raw)
    polling = OrchestratorClient(server.url, transports=["polling"])
    await polling.connect()
    try:
        await polling.login("p")
        sessions = await polling.get_sessions()
        await polling.join_session(next(iter(sessions)))
        await polling.register_for_data_stream(sender_id, kind)
        payload = bytes(range(256)) * 300  # a frame header of 64-bit length class, every byte value
        await sender.send_binary_event("SendData", kind, payload=payload)
        _, (_, _, polled) = await polling.next_event("DataReceived")
        while True:
            event, args = await ws_receiver.next_event()
            if event == "DataReceived":
                break
        assert polled == payload and args == [sender_id, kind, payload]
    finally:
        await polling.disconnect()


def test_websocket_frames_match_the_protocol():
    assert ws_frame("42") == b"\x81\x0242"
    assert ws_frame(b"x" * 125)[:2] == b"\x82\x7d"
    assert ws_frame(b"x" * 126)[:4] == b"\x82\x7e\x00\x7e"
    assert ws_frame(b"x" * 65536)[:10] == b"\x82\x7f" + (65536).to_bytes(8, "big")


class _Protocol:
    """The three things DirectSink reads from uvicorn's protocol, over a real loopback connection."""

    close_sent = False

    def __init__(self, transport: asyncio.Transport, writable: asyncio.Event) -> None:
        self.transport, self.writable = transport, writable


async def test_packets_that_wait_for_a_slow_reader_go_out_in_order_once_it_reads():
    """Written straight while the transport drains; queued, in order, while it does not; flushed after."""
    received = bytearray()
    server_side: list[asyncio.Transport] = []

    class Reader(asyncio.Protocol):
        def connection_made(self, transport):
            server_side.append(transport)
            transport.pause_reading()  # a client that stops reading

        def data_received(self, data):
            received.extend(data)

    class Writer(asyncio.Protocol):
        def pause_writing(self):
            writable.clear()

        def resume_writing(self):
            writable.set()

    loop = asyncio.get_running_loop()
    writable = asyncio.Event()
    writable.set()
    server = await loop.create_server(Reader, "127.0.0.1", 0)
    transport, _ = await loop.create_connection(Writer, "127.0.0.1", server.sockets[0].getsockname()[1])
    transport.set_write_buffer_limits(high=64 * 1024)
    queue = MeteredQueue()
    queue.sink = DirectSink(_Protocol(transport, writable))
    flusher = asyncio.create_task(_flush_waiting(queue, queue.sink))
    sent = []
    for i in range(400):  # ~20 MB: far more than the socket buffers hold
        if i % 10 == 0:
            packets = encode_event("MessageSent", ({"i": i},))
            for pkt in packets:
                queue.put_nowait(pkt)
            sent.append(("text", i))
        else:
            payload = i.to_bytes(4, "big") * 12800
            queue.put_frame(encode_frame("DataReceived", ("u", "k", payload), len(payload)), len(payload))
            sent.append(("frame", i))
    assert not writable.is_set() and queue.qsize() > 0  # the reader stopped: the rest waits here
    server_side[0].resume_reading()
    queue.put_nowait(None)
    await asyncio.wait_for(flusher, 30)
    expected_len = 0
    for kind, i in sent:
        if kind == "text":
            expected_len += len(ws_frame("4" + encode_event("MessageSent", ({"i": i},))[0].data))
        else:
            frame = encode_frame("DataReceived", ("u", "k", i.to_bytes(4, "big") * 12800), 51200)
            expected_len += sum(len(part) for part in frame[0].frame_wire)
    for _ in range(300):
        if len(received) >= expected_len:
            break
        await asyncio.sleep(0.05)
    order = []
    pos = 0
    while pos < len(received):  # parse the unmasked frames back
        first, size = received[pos], received[pos + 1]
        pos += 2
        if size == 126:
            size = int.from_bytes(received[pos:pos + 2], "big")
            pos += 2
        elif size == 127:
            size = int.from_bytes(received[pos:pos + 8], "big")
            pos += 8
        body = bytes(received[pos:pos + size])
        pos += size
        if first == 0x81 and body.startswith(b"42"):
            order.append(("text", json.loads(body[2:])[1]["i"]))
        elif first == 0x82:
            order.append(("frame", int.from_bytes(body[:4], "big")))
    assert order == sent
    transport.close()
    server.close()


async def test_uvicorn_internals_the_fast_paths_rely_on():
    """DirectSink and Inbox read these from uvicorn's websockets-sansio protocol; if a uvicorn release
    renames them the server falls back to ASGI (correct, slower) and this test says so."""
    import uvicorn
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    from uvicorn.server import ServerState

    from orchestrator.inbound import Inbox

    async def app(scope, receive, send):  # pragma: no cover - never called
        pass

    config = uvicorn.Config(app, ws="websockets-sansio")
    config.load()
    protocol = WebSocketsSansIOProtocol(config, ServerState(), app_state={})
    protocol.transport = None  # set by connection_made on a real connection
    assert Inbox.supported(protocol)
    for name in ("writable", "close_sent"):
        assert hasattr(protocol, name), name
    assert inspect.iscoroutinefunction(WebSocketsSansIOProtocol.send)  # DirectSink.close awaits it
    assert eio_packet.Packet(eio_packet.MESSAGE, "x").encode_cache is None  # wire_parts restores it
