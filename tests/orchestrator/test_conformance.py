"""The conformance scenarios S1-S12 of the wire contract, against a real server process."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.client import OrchestratorError

SCENARIO = {"scenarioId": "sc-1", "scenarioName": "Pilot", "scenarioDescription": "a scenario"}


async def add_session(raw_or_client, name="s", protocol="socketio"):
    return await raw_or_client.add_session(name, description="d", protocol=protocol, scenario_id="sc-1",
                                           scenario_name="Pilot", scenario_description="a scenario")


async def no_event(client, name=None, timeout_s=0.3):
    with pytest.raises(TimeoutError):
        await client.next_event(name, timeout_s=timeout_s)


# S1 -----------------------------------------------------------------------------------------

async def test_s1_opening_sequence_raw(raw):
    unity = await raw()
    login = await unity.command("Login", {"userName": "machine"})
    assert login["error"] == 0 and login["message"] == "OK" and set(login["body"]) == {"userId"}
    data = await unity.command("UpdateUserDataJson", {"userDataJson": '{"userRepresentationType": 2}'})
    assert data == {"error": 0, "message": "OK", "body": {"userRepresentationType": 2}}
    version = await unity.command("GetOrchestratorVersion", {})
    assert set(version["body"]) == {"orchestratorVersion", "revision"}
    ntp = await unity.command("GetNTPTime", {})
    assert isinstance(ntp["body"]["ntpTimeMs"], int) and ntp["body"]["ntpDate"].endswith("Z")
    sessions = await unity.command("GetSessions", {})
    assert sessions["error"] == 0 and isinstance(sessions["body"], dict)


async def test_s1_login_errors(raw):
    unity = await raw()
    for data in ({}, {"userName": ""}, {"userName": None}):
        reply = await unity.command("Login", data)
        assert reply == {"error": 204, "message": "The user credentials are missing", "body": {}}
    reply = await unity.command("GetSessions", {"commandId": "c1"})
    assert reply["error"] == 5001 and reply["body"] == {} and reply["commandId"] == "c1"


async def test_command_id_is_echoed_on_success_and_error(raw):
    unity = await raw()
    assert (await unity.command("Login", {"userName": "x", "commandId": 7}))["commandId"] == 7
    reply = await unity.command("JoinSession", {"sessionId": "nope", "commandId": "abc"})
    assert reply["error"] == 503 and reply["commandId"] == "abc"


# S2 -----------------------------------------------------------------------------------------

async def test_s2_create_session(clients):
    admin = await clients()
    session = await add_session(admin, "Room")
    assert session["sessionName"] == "Room" and session["sessionDescription"] == "d"
    assert session["sessionAdministrator"] == admin.user_id == session["sessionMaster"]
    assert session["scenarioId"] == "sc-1" and session["sessionProtocol"] == "socketio"
    assert session["sessionUsers"] == [admin.user_id]
    (definition,) = session["sessionUserDefinitions"]
    assert definition == {"userId": admin.user_id, "userName": "u0", "userData": {},
                          "sfuData": {"url_gen": "", "url_audio": "", "url_pcc": ""}}
    assert await admin.get_session_info() == session
    sessions = await admin.get_sessions()
    assert sessions[session["sessionId"]] == session


async def test_s2_user_outside_session_has_empty_sfu_data(clients):
    a, b = await clients(2)
    session = await add_session(a)
    await b.join_session(session["sessionId"])
    await b.leave_session()
    dump_user = next(u for u in (await a.dump_data())["users"] if u["userId"] == b.user_id)
    assert dump_user["sfuData"] == {}


# S3 -----------------------------------------------------------------------------------------

async def test_s3_second_user_joins(clients):
    admin, member, third = await clients(3)
    session = await add_session(admin)
    joined = await member.join_session(session["sessionId"])
    assert joined["sessionUsers"] == [admin.user_id, member.user_id]
    assert [u["userId"] for u in joined["sessionUserDefinitions"]] == joined["sessionUsers"]
    _, (update,) = await admin.next_event("SessionUpdated")
    assert update["eventId"] == "USER_JOINED_SESSION"
    assert update["eventData"]["userId"] == member.user_id
    assert update["eventData"]["userData"]["userName"] == "u1"  # the full User
    await no_event(member, "SessionUpdated")
    with pytest.raises(OrchestratorError) as err:
        await member.join_session(session["sessionId"])
    assert err.value.code == 603
    with pytest.raises(OrchestratorError) as err:
        await third.join_session("no-such-session")
    assert err.value.code == 503
    other = await add_session(third, "other")
    with pytest.raises(OrchestratorError) as err:
        await member.join_session(other["sessionId"])
    assert err.value.code == 602


async def test_s3_joined_event_precedes_joiners_ack(raw):
    admin, member = await raw(), await raw()
    await admin.command("Login", {"userName": "a"})
    await member.command("Login", {"userName": "b"})
    session = (await admin.command("AddSession", {"sessionName": "s", "sessionDescription": "",
                                                  "sessionProtocol": "socketio",
                                                  "scenarioDefinition": SCENARIO}))["body"]
    reply = await member.command("JoinSession", {"sessionId": session["sessionId"]})
    assert reply["error"] == 0
    # By the time the joiner has its ack, the admin's notification is already on the wire.
    event, args = await admin.next_event(timeout=1)
    assert event == "SessionUpdated" and args[0]["eventId"] == "USER_JOINED_SESSION"


# S4 -----------------------------------------------------------------------------------------

async def test_s4_messages(clients):
    admin, member, outsider = await clients(3)
    session = await add_session(admin)
    await member.join_session(session["sessionId"])
    await admin.next_event("SessionUpdated")
    start = 'START_{"scenario":"x"}'
    await admin.send_message_to_all(start)
    for client in (admin, member):
        _, (msg,) = await client.next_event("MessageSent")
        assert msg == {"messageFrom": admin.user_id, "messageFromName": "u0", "message": start}
    await member.send_message(admin.user_id, "hello")
    _, (msg,) = await admin.next_event("MessageSent")
    assert msg["message"] == "hello" and msg["messageFrom"] == member.user_id
    await no_event(member, "MessageSent")
    with pytest.raises(OrchestratorError) as err:
        await outsider.send_message_to_all("x")
    assert err.value.code == 800
    with pytest.raises(OrchestratorError) as err:
        await member.send_message(outsider.user_id, "x")
    assert err.value.code == 802


# S5 -----------------------------------------------------------------------------------------

async def test_s5_scene_events_are_binary(clients):
    master, member, other = await clients(3)
    session = await add_session(master)
    await member.join_session(session["sessionId"])
    await other.join_session(session["sessionId"])
    payload = bytes(range(256)) * 4
    await member.send_scene_event_to_master(payload)
    _, (event,) = await master.next_event("SceneEventToMaster")
    assert event == {"sceneEventFrom": member.user_id, "sceneEventData": payload}
    await master.send_scene_event_to_all(b"\x00all")
    for client in (master, member, other):
        _, (event,) = await client.next_event("SceneEventToUser")
        assert event == {"sceneEventFrom": master.user_id, "sceneEventData": b"\x00all"}
    await master.send_scene_event_to_user(other.user_id, b"\x01one")
    _, (event,) = await other.next_event("SceneEventToUser")
    assert event["sceneEventData"] == b"\x01one"
    await no_event(member, "SceneEventToUser")
    for call in (member.send_scene_event_to_all(b"x"), member.send_scene_event_to_user(other.user_id, b"x")):
        with pytest.raises(OrchestratorError) as err:
            await call
        assert err.value.code == 3012
    assert member.connected and (await member.get_session_info())["sessionId"] == session["sessionId"]
    with pytest.raises(OrchestratorError) as err:
        await master.send_scene_event_to_user("", b"x")
    assert err.value.code == 3014
    with pytest.raises(OrchestratorError) as err:
        await master.send_scene_event_to_all(b"")
    assert err.value.code == 3002


async def test_s5_scene_event_raw_binary_attachment(raw):
    master, member = await raw(), await raw()
    await master.command("Login", {"userName": "m"})
    uid = (await member.command("Login", {"userName": "n"}))["body"]["userId"]
    session = (await master.command("AddSession", {"sessionName": "s", "sessionDescription": "",
                                                   "sessionProtocol": "socketio",
                                                   "scenarioDefinition": SCENARIO}))["body"]
    await member.command("JoinSession", {"sessionId": session["sessionId"]})
    assert (await master.next_event())[0] == "SessionUpdated"
    await member.send_binary_event("SendSceneEventToMaster", payload=b"\xffscene")
    event, (body,) = await master.next_event()
    assert event == "SceneEventToMaster" and body == {"sceneEventFrom": uid, "sceneEventData": b"\xffscene"}


# S6 -----------------------------------------------------------------------------------------

async def test_s6_data_streams(clients):
    sender, registered, unregistered = await clients(3)
    session = await add_session(sender)
    await registered.join_session(session["sessionId"])
    await unregistered.join_session(session["sessionId"])
    kind = f"{sender.user_id}.pointcloud#0"
    declared = await sender.declare_data_stream(kind, "pc")
    assert declared["dataStreams"][kind] == {"dataStreamKind": kind, "dataSteamDescription": "pc",
                                             "dataStreamDescription": "pc"}
    assert declared["connectionId"] == declared["connectionLoggedAs"] == sender.user_id
    reg = await registered.register_for_data_stream(sender.user_id, kind)
    assert reg["remoteDataStreams"] == {f"{sender.user_id}::{kind}": {
        "dataStreamUserId": sender.user_id, "dataStreamKind": kind, "dataStreamDescription": ""}}
    frame = (1234).to_bytes(8, "little") + bytes(range(256)) * 100
    big = (5678).to_bytes(8, "little") + b"\xab" * 1_000_000  # 1,000,008 bytes: Unity's largest
    await sender.send_data(kind, frame)
    await sender.send_data(kind, big)
    for expected in (frame, big):
        _, (from_id, name, data) = await registered.next_event("DataReceived")
        assert (from_id, name, data) == (sender.user_id, kind, expected)
    await no_event(unregistered, "DataReceived")
    await no_event(sender, "DataReceived")
    # Unity passes its own id when unregistering.
    await registered.unregister_from_data_stream(registered.user_id, kind)
    await sender.send_data(kind, frame)
    await no_event(registered, "DataReceived")


async def test_s6_raw_send_data_frames_in_order(raw):
    sender, receiver = await raw(), await raw()
    sid = (await sender.command("Login", {"userName": "s"}))["body"]["userId"]
    await receiver.command("Login", {"userName": "r"})
    session = (await sender.command("AddSession", {"sessionName": "s", "sessionDescription": "",
                                                   "sessionProtocol": "socketio",
                                                   "scenarioDefinition": SCENARIO}))["body"]
    await receiver.command("JoinSession", {"sessionId": session["sessionId"]})
    await receiver.ws.send(f'42["RegisterForDataStream","{sid}","{sid}.audio#0"]')
    await asyncio.sleep(0.2)  # events without ack: give the registration time to land
    frames = [i.to_bytes(8, "little") + bytes([i % 256]) * (100 + i) for i in range(50)]
    for frame in frames:
        await sender.send_binary_event("SendData", f"{sid}.audio#0", payload=frame)
    received = []
    while len(received) < len(frames):
        event, args = await receiver.next_event()
        if event == "DataReceived":
            assert args[:2] == [sid, f"{sid}.audio#0"]
            received.append(args[2])
    assert received == frames


# S7 / S8 ------------------------------------------------------------------------------------

async def test_s7_member_leaves(clients):
    admin, member = await clients(2)
    session = await add_session(admin)
    await member.join_session(session["sessionId"])
    await admin.next_event("SessionUpdated")
    await member.leave_session()
    _, (update,) = await admin.next_event("SessionUpdated")
    assert update == {"eventId": "USER_LEFT_SESSION", "eventData": {"userId": member.user_id}}
    with pytest.raises(OrchestratorError) as err:
        await member.leave_session()
    assert err.value.code == 800
    with pytest.raises(OrchestratorError) as err:
        await member.get_session_info()
    assert err.value.code == 700


async def test_s8_admin_leaves_master_reelected_then_deletes(clients):
    admin, member, stranger = await clients(3)
    session = await add_session(admin)
    sid = session["sessionId"]
    await member.join_session(sid)
    await admin.leave_session()
    _, (update,) = await member.next_event("SessionUpdated")
    assert update["eventId"] == "USER_LEFT_SESSION"
    info = await admin.get_session_info()  # the administrator still sees its session
    assert info["sessionUsers"] == [member.user_id] and info["sessionMaster"] == member.user_id
    assert info["sessionAdministrator"] == admin.user_id
    with pytest.raises(OrchestratorError) as err:
        await admin.delete_session(sid)
    assert err.value.code == 504
    with pytest.raises(OrchestratorError) as err:
        await stranger.delete_session(sid)
    assert err.value.code == 501
    await member.leave_session()
    assert (await admin.get_session_info())["sessionUsers"] == []
    await admin.delete_session(sid)
    with pytest.raises(OrchestratorError) as err:
        await admin.delete_session(sid)
    assert err.value.code == 503
    assert sid not in await admin.get_sessions()


# S9 / S10 -----------------------------------------------------------------------------------

async def test_s9_member_disconnect_cleans_up(clients):
    admin, member = await clients(2)
    session = await add_session(admin)
    await member.join_session(session["sessionId"])
    await admin.next_event("SessionUpdated")
    await member.disconnect()
    _, (update,) = await admin.next_event("SessionUpdated")
    assert update == {"eventId": "USER_LEFT_SESSION", "eventData": {"userId": member.user_id}}
    assert (await admin.get_session_info())["sessionUsers"] == [admin.user_id]


async def test_s9_admin_disconnect_closes_session(clients):
    admin, member = await clients(2)
    session = await add_session(admin)
    await member.join_session(session["sessionId"])
    await admin.next_event("SessionUpdated")
    await admin.disconnect()
    _, (update,) = await member.next_event("SessionUpdated")
    assert update == {"eventId": "USER_LEFT_SESSION", "eventData": {"userId": admin.user_id}}
    assert (await member.next_event("SessionClosed"))[1] == ({},)
    await no_event(member, "SessionClosed")  # once, not twice
    await member.leave_session()  # must be answered with 0 or Unity is stuck in the scenario
    assert session["sessionId"] not in await member.get_sessions()
    again = await clients(login=False)
    assert await again.login("u0")  # the same name logs in again


async def test_s10_two_connections_one_name(clients):
    first = await clients()
    second = await clients()  # also named u0
    assert first.user_id != second.user_id
    session = await add_session(first)
    await second.join_session(session["sessionId"])
    await second.send_message(first.user_id, "hi")
    assert (await first.next_event("MessageSent"))[1][0]["message"] == "hi"
    await first.send_message(second.user_id, "ho")
    assert (await second.next_event("MessageSent"))[1][0]["message"] == "ho"


async def test_logout_then_login_again_on_same_connection(clients):
    admin, member = await clients(2)
    session = await add_session(admin)
    await member.join_session(session["sessionId"])
    await admin.next_event("SessionUpdated")
    old_id = member.user_id
    await member.logout()
    assert (await admin.next_event("SessionUpdated"))[1][0]["eventId"] == "USER_LEFT_SESSION"
    with pytest.raises(OrchestratorError) as err:
        await member.get_sessions()
    assert err.value.code == 5001
    assert await member.login("again") != old_id


async def test_user_data_update_reaches_session(clients):
    a, b = await clients(2)
    session = await add_session(a)
    await b.join_session(session["sessionId"])
    await a.next_event("SessionUpdated")
    merged = await b.update_user_data({"x": 1})
    assert merged == {"x": 1}
    assert await b.update_user_data('{"y": 2}') == {"x": 1, "y": 2}
    _, (update,) = await a.next_event("SessionUpdated")
    assert update == {"eventId": "USER_DATA_UPDATED",
                      "eventData": {"userId": b.user_id, "userData": {"x": 1}}}
    assert await a.get_user_data(b.user_id) == {"x": 1, "y": 2}
    assert await b.get_user_data() == {"x": 1, "y": 2}
    with pytest.raises(OrchestratorError) as err:
        await a.get_user_data("nobody")
    assert err.value.code == 1301
