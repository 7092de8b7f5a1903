"""A process killed, a process joining late, Redis lost and back, Redis absent at start-up."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from typing import Any

import pytest
import redis

from orchestrator.client import OrchestratorClient, OrchestratorError


async def barrier(client: OrchestratorClient) -> None:
    with contextlib.suppress(OrchestratorError):  # goes through the log, changes nothing
        await client.send_scene_event_to_user("nobody", b"barrier")


async def state_of(*clients: OrchestratorClient) -> dict[str, Any]:
    for client in clients:
        await barrier(client)
    dumps = [await client.dump_data() for client in clients]
    for dump in dumps[1:]:
        assert (dump["sessions"], dump["users"]) == (dumps[0]["sessions"], dumps[0]["users"])
    return {"sessions": dumps[0]["sessions"], "users": dumps[0]["users"]}


async def updated(client: OrchestratorClient, event_id: str, timeout_s: float = 5) -> dict[str, Any]:
    _, (event,) = await client.next_event("SessionUpdated", timeout_s=timeout_s)
    assert event["eventId"] == event_id, event
    return event["eventData"]


async def retried(command, timeout_s: float = 10) -> Any:
    """What a client does with 5012: try again a little later (the store is reconnecting)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await command()
        except OrchestratorError as exc:
            if exc.code != 5012 or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.05)


async def until_ready(*nodes, status: int = 200, timeout_s: float = 15) -> None:
    """No event tells when another process became (un)ready: its probe is polled."""
    deadline = time.monotonic() + timeout_s
    while True:
        codes = [h_get(node) for node in nodes]
        if all(code == status for code in codes):
            return
        assert time.monotonic() < deadline, f"/readyz {codes}, expected {status}"
        await asyncio.sleep(0.05)


def h_get(node) -> int:
    import cluster_harness
    return cluster_harness.http_get(f"{node.url}/readyz")[0]


async def test_killed_process_users_are_logged_out_after_the_timeout(redis_server, nodes, connect, h):
    state = redis_server.new_db()
    a, b = nodes(state), nodes(state)
    admin_a = await connect(a.url, "admin-a")
    member_b = await connect(b.url, "member-b")
    admin_b = await connect(b.url, "admin-b")
    member_a = await connect(a.url, "member-a")
    s1 = (await admin_a.add_session("on-a"))["sessionId"]
    s2 = (await admin_b.add_session("on-b"))["sessionId"]
    await member_b.join_session(s1)
    await member_a.join_session(s2)
    await updated(admin_a, "USER_JOINED_SESSION")
    killed_at = time.monotonic()
    b.proc.send_signal(signal.SIGKILL)
    timeout = h.harness.TIMEOUT_S
    assert (await updated(admin_a, "USER_LEFT_SESSION", timeout_s=timeout * 4))["userId"] == member_b.user_id
    assert time.monotonic() - killed_at >= timeout - 2 * h.harness.HEARTBEAT_S  # not before the timeout
    assert (await updated(member_a, "USER_LEFT_SESSION"))["userId"] == admin_b.user_id
    await member_a.next_event("SessionClosed", timeout_s=5)
    await member_a.leave_session()
    dump = await state_of(admin_a)
    assert {u["userId"] for u in dump["users"]} == {admin_a.user_id, member_a.user_id}
    assert [s["sessionId"] for s in dump["sessions"]] == [s1]
    assert a.log().count("declared down") == 1  # one survivor, one node_down


async def test_process_started_later_loads_snapshot_and_replays(redis_server, nodes, connect, h):
    state = redis_server.new_db()
    a, b = nodes(state), nodes(state)
    admin = await connect(a.url, "admin")
    member = await connect(b.url, "member")
    sid = (await admin.add_session("early", scenario_id="sc"))["sessionId"]
    await member.join_session(sid)
    await admin.update_user_data({"avatar": [1, 2]})
    await member.declare_data_stream("m.pc#0", "points")
    await admin.register_for_data_stream(member.user_id, "m.pc#0")
    store = redis.Redis(port=redis_server.port, db=int(state.rsplit("/", 1)[1]))
    deadline = time.monotonic() + 20
    while (store.lindex("orch:snaps", 0) or b"0-0") == b"0-0":  # written after enough entries or time
        assert time.monotonic() < deadline, "no snapshot was written"
        await barrier(admin)
        await asyncio.sleep(0.1)
    snapshot = store.lindex("orch:snaps", 0).decode()
    late_member = await connect(a.url, "after-snapshot")
    await late_member.join_session(sid)
    await member.leave_session()
    store.close()
    c = nodes(state)
    assert f"state from snapshot {snapshot} plus " in c.log()
    replayed = int(c.log().split(f"state from snapshot {snapshot} plus ")[1].split()[0])
    assert replayed >= 3  # the join, the leave and the barrier after the snapshot
    newcomer = await connect(c.url, "newcomer")
    assert (await newcomer.get_sessions())[sid]["sessionUsers"] == [admin.user_id, late_member.user_id]
    await newcomer.join_session(sid)
    assert (await updated(admin, "USER_JOINED_SESSION"))["userId"] == member.user_id
    assert (await updated(admin, "USER_DATA_UPDATED"))["userData"] == {"avatar": [1, 2]}
    assert (await updated(admin, "USER_JOINED_SESSION"))["userId"] == late_member.user_id
    assert (await updated(admin, "USER_LEFT_SESSION"))["userId"] == member.user_id
    assert (await updated(admin, "USER_JOINED_SESSION"))["userId"] == newcomer.user_id
    await newcomer.register_for_data_stream(admin.user_id, "a.pc#0")
    await admin.send_data("a.pc#0", b"\x01" * 1000)
    assert (await newcomer.next_event("DataReceived"))[1] == (admin.user_id, "a.pc#0", b"\x01" * 1000)
    dump = await state_of(admin, member, newcomer)
    users = {u["userId"]: u for u in dump["users"]}
    assert users[admin.user_id]["userData"] == {"avatar": [1, 2]}


async def test_redis_lost_and_back(tmp_path, nodes, connect, h):
    """A blip (connections cut, log intact): continue from the last applied entry. A restart with an
    empty Redis: refuse changes (5012), keep relaying locally, then re-seed from a replica."""
    try:
        store = h.harness.start_redis(tmp_path / "redis")
    except FileNotFoundError:
        pytest.skip("redis-server is not installed (scripts/install --test installs it)")
    try:
        await lost_and_back(store, nodes, connect, h)
    finally:
        store.stop()


async def lost_and_back(store, nodes, connect, h) -> None:
    state = store.url(0)
    a, b = nodes(state), nodes(state)
    admin = await connect(a.url, "admin")
    local = await connect(a.url, "local")
    remote = await connect(b.url, "remote")
    leaver = await connect(b.url, "leaves-during-outage")
    idle = await connect(b.url, "idle")
    sid = (await admin.add_session("kept"))["sessionId"]
    for client in (local, remote, leaver):
        await client.join_session(sid)
        await updated(admin, "USER_JOINED_SESSION")
    await local.register_for_data_stream(admin.user_id, "pc")
    await remote.register_for_data_stream(admin.user_id, "pc")
    before = await state_of(admin, remote)

    direct = redis.Redis(port=store.port)
    direct.client_kill_filter(_type="normal", skipme=True)
    direct.client_kill_filter(_type="pubsub")
    direct.close()
    await retried(remote.leave_session)  # refused with 5012 until the process reconnected
    assert (await updated(admin, "USER_LEFT_SESSION"))["userId"] == remote.user_id
    await remote.join_session(sid)
    await updated(admin, "USER_JOINED_SESSION")
    await remote.register_for_data_stream(admin.user_id, "pc")
    blip = await state_of(admin, remote)
    assert blip["users"] == before["users"]
    assert blip["sessions"][0]["sessionUsers"] == [u.user_id for u in (admin, local, leaver, remote)]
    assert "re-seeded" not in a.log() + b.log() and "replaced by the snapshot" not in a.log() + b.log()

    store.stop()
    await until_ready(a, b, status=503)
    for client, call in ((idle, idle.add_session("refused")), (admin, admin.update_user_data({"x": 1}))):
        with pytest.raises(OrchestratorError) as err:
            await call
        assert err.value.code == 5012 and err.value.message == "State store unavailable", client
    newcomer = OrchestratorClient(a.url, timeout_s=5)
    await newcomer.connect()
    with pytest.raises(OrchestratorError) as err:
        await newcomer.login("during outage")
    assert err.value.code == 5012
    await newcomer.disconnect()
    await admin.send_data("pc", b"local relay goes on")
    assert (await local.next_event("DataReceived"))[1][2] == b"local relay goes on"
    assert (await remote.get_session_info())["sessionId"] == sid  # reads still answered
    await leaver.disconnect()  # cannot reach the log now: logged out once the store is back

    store2 = h.harness.start_redis(store.workdir, port=store.port)
    store.proc = store2.proc
    await until_ready(a, b)
    assert (await updated(admin, "USER_LEFT_SESSION", timeout_s=10))["userId"] == leaver.user_id
    after = await state_of(admin, remote)
    assert after["sessions"][0]["sessionUsers"] == [u.user_id for u in (admin, local, remote)]
    assert {u["userId"] for u in after["users"]} == {u["userId"] for u in before["users"]} - {leaver.user_id}
    assert (a.log() + b.log()).count("re-seeded from this replica") == 1
    late = await connect(b.url, "after restart")
    await late.join_session(sid)
    assert (await updated(admin, "USER_JOINED_SESSION"))["userId"] == late.user_id
    await admin.send_data("pc", b"across again")
    assert (await remote.next_event("DataReceived", timeout_s=5))[1][2] == b"across again"


def test_redis_unavailable_at_start_up_is_one_clear_line_and_exit_3(nodes, h):
    port = h.harness.free_port()  # nothing listens there
    node = nodes(f"redis://127.0.0.1:{port}/0", ready=False)
    assert node.proc.wait(30) == 3
    log = node.log()
    assert f"start-up failed: state store redis://127.0.0.1:{port}/0 unavailable: " in log
    assert "Traceback" not in log
    node = nodes("postgres://somewhere/x", ready=False)
    assert node.proc.wait(30) == 3
    assert "unsupported --state 'postgres://somewhere/x'" in node.log()
