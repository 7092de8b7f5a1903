"""S11: malformed data for every command gets an error ack; junk is ignored; the server keeps serving."""

from __future__ import annotations

import asyncio

import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from orchestrator_process import start_server
from rawclient import RawClient

from orchestrator.client import OrchestratorError
from orchestrator.handlers import COMMANDS, load_all
from orchestrator.protocol import MESSAGES, Err

load_all()
COMMAND_NAMES = sorted(COMMANDS)
NOT_OBJECTS = [None, "a string", 42, 1.5, True, [], ["list"]]
KNOWN_CODES = {int(code) for code in MESSAGES}


def assert_envelope(reply, *, error=True):
    assert set(reply) <= {"error", "message", "body", "commandId"}
    assert isinstance(reply["error"], int) and isinstance(reply["message"], str)
    assert isinstance(reply["body"], dict)
    assert reply["error"] in KNOWN_CODES
    if error:
        assert reply["error"] != 0 and reply["body"] == {}


@pytest.fixture(scope="module")
def untrusted_server(tmp_path_factory):
    """A server that trusts no network, so fuzzed operator commands are refused, not obeyed."""
    srv = start_server(tmp_path_factory.mktemp("fuzz"), "--trusted-networks", "192.0.2.1/32")
    yield srv
    srv.stop()


@pytest.fixture
async def logged_in(raw):
    client = await raw()
    await client.command("Login", {"userName": "fuzz"})
    return client


@pytest.mark.parametrize("command", COMMAND_NAMES)
async def test_non_object_data_gets_error_ack(logged_in, command):
    for data in NOT_OBJECTS:
        reply = await logged_in.command(command, data)
        assert_envelope(reply)
        assert reply["error"] == Err.INVALID_REQUEST, (command, data, reply)


WRONG_FIELDS = {
    "Login": [({"userName": 5}, 5002), ({"userName": ["x"]}, 5002), ({"userName": "x" * 10_000}, 5005)],
    "UpdateUserDataJson": [({}, 1700), ({"userDataJson": "{not json"}, 5003), ({"userDataJson": "[1]"}, 5003),
                           ({"userDataJson": 7}, 5003), ({"userDataJson": "x" * 300_000}, 5005)],
    "GetUserData": [({"userId": 5}, 5002), ({"userId": "nobody"}, 1301)],
    "AddSession": [({}, 404), ({"sessionName": 1, "scenarioDefinition": {}}, 404),
                   ({"sessionName": "s"}, 404), ({"sessionName": "s", "scenarioDefinition": "x"}, 404),
                   ({"sessionName": "s", "scenarioDefinition": {}, "sessionProtocol": 3}, 404)],
    "JoinSession": [({}, 503), ({"sessionId": 5}, 5002), ({"sessionId": "nope"}, 503)],
    "LeaveSession": [({}, 800)],
    "GetSessionInfo": [({}, 700)],
    "DeleteSession": [({}, 503), ({"sessionId": {}}, 5002)],
    "SendMessage": [({"userId": "x", "message": "m"}, 800)],
    "SendMessageToAll": [({"message": "m"}, 800)],
}


@pytest.mark.parametrize("command", sorted(WRONG_FIELDS))
async def test_wrong_fields_get_documented_codes(logged_in, command):
    for data, code in WRONG_FIELDS[command]:
        reply = await logged_in.command(command, {**data, "commandId": "k"})
        assert_envelope(reply)
        assert (reply["error"], reply["commandId"]) == (code, "k"), (data, reply)


async def test_message_errors_inside_a_session(logged_in):
    await logged_in.command("AddSession", {"sessionName": "s", "scenarioDefinition": {}})
    for data, code in [({"message": "m"}, 802), ({"userId": 3, "message": "m"}, 802),
                       ({"userId": "x"}, 5002)]:
        reply = await logged_in.command("SendMessage", data)
        assert reply["error"] == code, (data, reply)
    assert (await logged_in.command("SendMessageToAll", {}))["error"] == 5002
    assert (await logged_in.command("SendMessageToAll", {"message": "x" * 2_000_000}))["error"] == 5005


async def test_events_without_ack_drop_bad_input(logged_in, raw, clients):
    junk = [
        '42["SendData"]', '42["SendData", 5, 6]', '42["SendData", "k", {"a": 1}]',
        '42["DeclareDataStream"]', '42["RegisterForDataStream", null, null]',
        '42["UnregisterFromDataStream", 1]', '42["SendSceneEventToMaster"]',
        '42["SendSceneEventToUser", {}, []]', '42["SendSceneEventToAllUsers", null]',
        '42["NoSuchEvent", 1, 2]', '42[]', '42[5]', '42{"not": "a list"}', '42not json', '4', '9', '',
        '451-["SendData","k",{"_placeholder":true,"num":7}]', '42["Login"',
    ]
    for frame in junk:
        await logged_in.ws.send(frame)
    await logged_in.ws.send(b"\x00\x01 binary without header")
    # The server is still serving: this client may or may not survive its own junk, others must.
    other = await raw()
    reply = await other.command("Login", {"userName": "after-junk"})
    assert reply["error"] == 0
    client = await clients()
    assert isinstance(await client.get_sessions(), dict)


async def test_acked_events_report_errors(clients):
    client = await clients()
    for args, code in [(("DeclareDataStream", "k"), 800), (("SendSceneEventToMaster", b"x"), 800),
                       (("SendData", "k", b"x"), 800 - 800)]:
        if code:
            with pytest.raises(OrchestratorError) as err:
                await client._acked(*args)
            assert err.value.code == code, args
        else:  # SendData outside a session is simply not delivered
            assert await client._acked(*args) == {}
    await client.add_session("s")
    for args, code in [(("RegisterForDataStream",), 4001), (("RegisterForDataStream", "u"), 700),
                       (("RegisterForDataStream", client.user_id), 4002), (("DeclareDataStream",), 4002),
                       (("SendSceneEventToMaster",), 3002), (("SendSceneEventToUser",), 3014),
                       (("SendData", "k", {"a": 1}), 5002), (("SendData",), 4002),
                       (("NoSuchCommand", 1), 5011)]:
        with pytest.raises(OrchestratorError) as err:
            await client._acked(*args)
        assert err.value.code == code, args


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from(["userName", "userDataJson", "userId", "sessionId", "sessionName",
                               "sessionDescription", "sessionProtocol", "scenarioDefinition", "message",
                               "commandId"])


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(command=st.sampled_from([*COMMAND_NAMES, "Bogus"]),
       data=json_values | st.dictionaries(field_names, json_values, max_size=5))
def test_fuzzed_commands_always_get_one_envelope(untrusted_server, command, data):
    asyncio.run(_fuzz_once(untrusted_server, command, data))


async def _fuzz_once(server, command, data):
    client = await RawClient.connect(server.ws_url)
    try:
        await client.command("Login", {"userName": "fuzz"})
        reply = await client.command(command, data)
        assert_envelope(reply, error=False)
        if isinstance(data, dict) and "commandId" in data and data["commandId"] is not None:
            assert reply["commandId"] == data["commandId"]
        assert (await client.command("GetOrchestratorVersion", {}))["error"] == 0
    finally:
        await client.close()


async def test_undecodable_packets_are_refused_inputs_not_tracebacks(server_factory):
    """Packets neither Engine.IO nor Socket.IO can decode cost one counted refusal each: no traceback
    per packet in the log, and a client that keeps sending them is cut off like any other abuser."""
    srv = server_factory("--abuse-limit", "12")
    bystander = await RawClient.connect(srv.ws_url)
    junker = await RawClient.connect(srv.ws_url)
    await bystander.command("Login", {"userName": "calm"})
    undecodable = ["4xyz", "49", "4[[[[[", "zzz", "42[1,2", "45x-[]"]
    for frame in undecodable:
        await junker.ws.send(frame)
    assert (await junker.command("GetNTPTime", {}))["error"] == 0  # below the limit: still served
    log = srv.log()
    assert "Traceback" not in log and "handler error" not in log, log
    for frame in undecodable:
        await junker.ws.send(frame)
    with pytest.raises(websockets.exceptions.ConnectionClosed):  # the twelfth refusal disconnects it
        for _ in range(50):
            await junker.recv_frame(timeout=5)
    assert "refused inputs" in srv.log() and "Traceback" not in srv.log()
    assert (await bystander.command("GetSessions", {}))["error"] == 0  # unaffected
    metrics = (await asyncio.to_thread(_get, f"{srv.url}/metrics"))
    assert 'orchestrator_rejected_inputs_total{reason="malformed_packet"} 12.0' in metrics


def _get(url: str) -> str:
    import urllib.request
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()
