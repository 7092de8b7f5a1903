"""PROTOCOL.md §8 scenarios S2-S10 with the clients spread over two processes of one cluster."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis
from rawclient import RawClient

from orchestrator.client import OrchestratorClient, OrchestratorError

UNITY_FRAME = 1_000_008


async def barrier(client: OrchestratorClient) -> None:
    """A command that goes through the log, changes nothing, and fails after its process applied it:
    once answered, that process has applied everything acknowledged anywhere before it."""
    with pytest.raises(OrchestratorError) as err:
        await client.send_scene_event_to_user("nobody", b"barrier")
    assert err.value.code in (700, 800, 3012)


async def same_state(*clients: OrchestratorClient) -> dict[str, Any]:
    """DumpData from every process (after a barrier on each) shows one and the same state."""
    for client in clients:
        await barrier(client)
    dumps = [await client.dump_data() for client in clients]
    assert len({d["id"] for d in dumps}) == len(dumps)  # distinct processes
    for dump in dumps[1:]:
        assert dump["sessions"] == dumps[0]["sessions"]
        assert dump["users"] == dumps[0]["users"]
    return dumps[0]


async def updated(client: OrchestratorClient, event_id: str) -> dict[str, Any]:
    _, (event,) = await client.next_event("SessionUpdated", timeout_s=5)
    assert event["eventId"] == event_id, event
    return event["eventData"]


async def test_s2_session_created_on_one_process_is_visible_on_the_other(pair, connect):
    admin = await connect(pair.a.url, "admin")
    other = await connect(pair.b.url, "other")
    session = await admin.add_session("s2", description="d", scenario_id="sc", scenario_name="n")
    assert session["sessionAdministrator"] == admin.user_id == session["sessionMaster"]
    assert session["sessionUsers"] == [admin.user_id]
    assert (await admin.get_session_info()) == session
    listed = await other.get_sessions()  # answered from b's replica right after a's ack
    assert listed[session["sessionId"]] == session
    dump = await same_state(admin, other)
    nodes = {u["userId"]: u["node"] for u in dump["users"]}
    a_id, b_id = (await admin.dump_data())["id"], (await other.dump_data())["id"]
    assert (nodes[admin.user_id], nodes[other.user_id]) == (a_id, b_id)
    assert f":{pair.a.port}/" in a_id and f":{pair.b.port}/" in b_id  # host:port/instance


async def test_s3_join_from_the_other_process(pair, connect):
    admin = await connect(pair.a.url, "admin")
    joiner = await connect(pair.b.url, "joiner")
    third = await connect(pair.a.url, "third")
    session = await admin.add_session("s3")
    sid = session["sessionId"]
    order: list[str] = []
    admin.on("SessionUpdated", lambda event: order.append("USER_JOINED"))
    joined = await joiner.join_session(sid)
    order.append("ack")
    assert order == ["USER_JOINED", "ack"]  # the admin's process delivered it before the joiner's ack
    assert joined["sessionUsers"] == [admin.user_id, joiner.user_id]
    assert [u["userId"] for u in joined["sessionUserDefinitions"]] == joined["sessionUsers"]
    data = await updated(admin, "USER_JOINED_SESSION")
    assert data["userId"] == joiner.user_id and data["userData"]["userName"] == "joiner"
    with pytest.raises(OrchestratorError) as err:
        await joiner.join_session(sid)
    assert err.value.code == 603
    with pytest.raises(OrchestratorError) as err:
        await third.join_session("no-such-session")
    assert err.value.code == 503
    await third.join_session(sid)
    assert (await updated(joiner, "USER_JOINED_SESSION"))["userId"] == third.user_id
    assert (await updated(admin, "USER_JOINED_SESSION"))["userId"] == third.user_id
    with pytest.raises(TimeoutError):
        await joiner.next_event("SessionUpdated", timeout_s=0.3)  # never told about itself
    info = await joiner.get_session_info()
    assert info["sessionUsers"] == [admin.user_id, joiner.user_id, third.user_id]
    await same_state(admin, joiner)


async def make_session(pair, connect, names=("admin", "member")) -> tuple[list[OrchestratorClient], str]:
    urls = [pair.a.url, pair.b.url]
    clients = [await connect(urls[i % 2], name) for i, name in enumerate(names)]
    sid = (await clients[0].add_session("s"))["sessionId"]
    for client in clients[1:]:
        await client.join_session(sid)
    for i, client in enumerate(clients[:-1]):  # drain the USER_JOINED events
        for _ in clients[i + 1:]:
            await updated(client, "USER_JOINED_SESSION")
    return clients, sid


async def test_s4_messages_across_processes(pair, connect):
    (admin, member), _ = await make_session(pair, connect)
    await admin.send_message_to_all("START_{\"x\":1}")
    for client in (admin, member):  # the sender gets its own START_ too
        _, (msg,) = await client.next_event("MessageSent", timeout_s=5)
        assert msg == {"messageFrom": admin.user_id, "messageFromName": "admin", "message": "START_{\"x\":1}"}
    await member.send_message(admin.user_id, {"private": True})
    _, (msg,) = await admin.next_event("MessageSent", timeout_s=5)
    assert msg["message"] == {"private": True} and msg["messageFrom"] == member.user_id
    loner = await connect(pair.b.url, "loner")
    with pytest.raises(OrchestratorError) as err:
        await loner.send_message_to_all("x")
    assert err.value.code == 800
    with pytest.raises(OrchestratorError) as err:
        await member.send_message(loner.user_id, "x")
    assert err.value.code == 802


async def test_s5_binary_scene_events_both_ways(pair, connect):
    (master, member), _ = await make_session(pair, connect)
    payload = bytes(range(256)) * 3
    await member.send_scene_event_to_master(payload)
    _, (event,) = await master.next_event("SceneEventToMaster", timeout_s=5)
    assert event == {"sceneEventFrom": member.user_id, "sceneEventData": payload}
    await master.send_scene_event_to_all(b"\x00all")
    for client in (master, member):
        _, (event,) = await client.next_event("SceneEventToUser", timeout_s=5)
        assert event == {"sceneEventFrom": master.user_id, "sceneEventData": b"\x00all"}
    await master.send_scene_event_to_user(member.user_id, b"\xffone")
    _, (event,) = await member.next_event("SceneEventToUser", timeout_s=5)
    assert event["sceneEventData"] == b"\xffone"
    with pytest.raises(OrchestratorError) as err:
        await member.send_scene_event_to_all(b"nope")
    assert err.value.code == 3012
    assert member.connected
    await member.send_scene_event_to_master(b"still here")
    _, (event,) = await master.next_event("SceneEventToMaster", timeout_s=5)
    assert event["sceneEventData"] == b"still here"


async def test_s6_data_streams_byte_exact_across_processes(pair, connect):
    (a, b, c), _ = await make_session(pair, connect, ("a", "b", "c"))  # a, c on one process, b on the other
    a_stream, b_stream = f"{a.user_id}.pointcloud#0", f"{b.user_id}.audio#0"
    await a.declare_data_stream(a_stream)
    await b.register_for_data_stream(a.user_id, a_stream)
    await a.register_for_data_stream(b.user_id, b_stream)
    await c.register_for_data_stream(a.user_id, "marker")
    big = (12345).to_bytes(8, "little") + bytes(i % 251 for i in range(UNITY_FRAME - 8))
    await a.send_data(a_stream, big)
    _, (sender, kind, data) = await b.next_event("DataReceived", timeout_s=10)
    assert (sender, kind, data) == (a.user_id, a_stream, big)
    await b.send_data(b_stream, b"\x00\x01\x02back")
    _, args = await a.next_event("DataReceived", timeout_s=5)
    assert args == (b.user_id, b_stream, b"\x00\x01\x02back")
    await a.send_data("marker", b"marker")
    _, args = await c.next_event("DataReceived", timeout_s=5)
    assert args == (a.user_id, "marker", b"marker")  # c did not get the frames it did not register for
    with pytest.raises(TimeoutError):
        await a.next_event("DataReceived", timeout_s=0.3)  # nor does the sender get its own


async def test_s7_member_leaves(pair, connect):
    (admin, member), _ = await make_session(pair, connect)
    await member.leave_session()
    assert (await updated(admin, "USER_LEFT_SESSION"))["userId"] == member.user_id
    with pytest.raises(OrchestratorError) as err:
        await member.leave_session()
    assert err.value.code == 800
    with pytest.raises(OrchestratorError) as err:
        await member.get_session_info()
    assert err.value.code == 700
    assert (await admin.get_session_info())["sessionUsers"] == [admin.user_id]
    await same_state(admin, member)


async def test_s8_admin_leaves_master_reelected_then_deletes(pair, connect):
    (admin, member, third), sid = await make_session(pair, connect, ("admin", "member", "third"))
    await admin.leave_session()
    for client in (member, third):
        assert (await updated(client, "USER_LEFT_SESSION"))["userId"] == admin.user_id
    info = await admin.get_session_info()  # the admin still has it
    assert info["sessionUsers"] == [member.user_id, third.user_id]
    assert info["sessionMaster"] == member.user_id == (await third.get_session_info())["sessionMaster"]
    await member.send_scene_event_to_all(b"new master")
    _, (event,) = await third.next_event("SceneEventToUser", timeout_s=5)
    assert event["sceneEventFrom"] == member.user_id
    for client, session_id, code in ((admin, sid, 504), (member, sid, 501), (admin, "nope", 503)):
        with pytest.raises(OrchestratorError) as err:
            await client.delete_session(session_id)
        assert err.value.code == code
    await member.leave_session()
    await third.leave_session()
    await admin.delete_session(sid)
    assert sid not in await member.get_sessions()
    assert sid not in await admin.get_sessions()
    await same_state(admin, member)


async def test_s9_disconnects_clean_up_across_processes(pair, connect):
    (admin, member, other), sid = await make_session(pair, connect, ("admin", "member", "other"))
    await other.disconnect()  # on a, like the admin
    for client in (admin, member):
        assert (await updated(client, "USER_LEFT_SESSION"))["userId"] == other.user_id
    await admin.disconnect()  # the member, on the other process, loses the session
    assert (await updated(member, "USER_LEFT_SESSION"))["userId"] == admin.user_id
    await member.next_event("SessionClosed", timeout_s=5)
    await member.leave_session()  # answered with OK, or the Unity client is stuck
    assert sid not in await member.get_sessions()
    again = await connect(pair.a.url, "admin")  # the same name logs in again
    assert again.user_id != admin.user_id
    dump = await same_state(again, member)
    assert {u["userId"] for u in dump["users"]} >= {again.user_id, member.user_id}
    assert not {admin.user_id, other.user_id} & {u["userId"] for u in dump["users"]}


async def test_s10_one_name_on_both_processes(pair, connect):
    first = await connect(pair.a.url, "machine")
    second = await connect(pair.b.url, "machine")
    assert first.user_id != second.user_id
    session = await first.add_session("mine")
    other = await second.add_session("yours")
    assert session["sessionId"] != other["sessionId"]
    await first.update_user_data('{"representation": 1}')
    assert await second.get_user_data(first.user_id) == {"representation": 1}
    await asyncio.gather(first.leave_session(), second.leave_session())
    await same_state(first, second)


async def test_data_sent_right_after_leaving_waits_for_the_leave(pair, connect):
    """LeaveSession goes through the shared log, so the connection's reader awaits it; a SendData that
    arrives meanwhile (in the same segment, or while the store is slow) must wait for it rather than
    be handled on the spot, so nobody receives it."""
    receiver = await connect(pair.a.url, "receiver")
    sender = await RawClient.connect(pair.a.ws_url)
    store = aioredis.from_url(pair.state)
    try:
        sender_id = (await sender.command("Login", {"userName": "sender"}))["body"]["userId"]
        session = await receiver.add_session("s")
        kind = f"{sender_id}.pointcloud#0"
        protocol = sender.ws.protocol
        for store_pause_ms in (0, 400):
            await sender.command("JoinSession", {"sessionId": session["sessionId"]})
            await updated(receiver, "USER_JOINED_SESSION")
            await receiver.register_for_data_stream(sender_id, kind)
            protocol.send_text(b'42["LeaveSession",{}]')
            if store_pause_ms:  # the leave waits for the store while the data frame arrives
                await store.execute_command("CLIENT", "PAUSE", str(store_pause_ms), "WRITE")
                sender.ws.transport.write(b"".join(protocol.data_to_send()))
                await asyncio.sleep(store_pause_ms / 4000)
            protocol.send_text(f'451-["SendData","{kind}",{{"_placeholder":true,"num":0}}]'.encode())
            protocol.send_binary(b"sent after leaving")
            sender.ws.transport.write(b"".join(protocol.data_to_send()))
            seen = []
            while not seen or seen[-1][0] != "SessionUpdated":
                seen.append(await receiver.next_event(timeout_s=5))
            assert [name for name, _ in seen] == ["SessionUpdated"]  # no DataReceived before the leave
            assert seen[0][1][0]["eventId"] == "USER_LEFT_SESSION"
            with pytest.raises(TimeoutError):
                await receiver.next_event("DataReceived", timeout_s=0.5)  # nor after it
    finally:
        await sender.close()
        await store.aclose()
