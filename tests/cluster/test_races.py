"""Concurrent logins, joins and leaves on both processes: log order decides, nothing lost or doubled,
one master, and both replicas identical."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.client import OrchestratorClient, OrchestratorError


async def barrier(client: OrchestratorClient) -> None:
    with contextlib.suppress(OrchestratorError):  # fails after its process applied it (see conformance)
        await client.send_scene_event_to_user("nobody", b"barrier")


async def identical_replicas(a: OrchestratorClient, b: OrchestratorClient) -> dict[str, Any]:
    await barrier(a)
    await barrier(b)
    dump_a, dump_b = await a.dump_data(), await b.dump_data()
    assert dump_a["sessions"] == dump_b["sessions"]
    assert dump_a["users"] == dump_b["users"]
    return dump_a


def check_sessions(dump: dict[str, Any]) -> None:
    """Every member once, in one session only; the master is the first member in join order."""
    seen: list[str] = []
    for session in dump["sessions"]:
        members = session["sessionUsers"]
        seen.extend(members)
        assert session.get("sessionMaster") == (members[0] if members else None)
    assert len(seen) == len(set(seen))


async def clients_on(pair, n: int) -> list[OrchestratorClient]:
    made = [OrchestratorClient((pair.a.url, pair.b.url)[i % 2], timeout_s=10) for i in range(n)]
    await asyncio.gather(*(c.connect() for c in made))
    return made


async def close(clients: list[OrchestratorClient]) -> None:
    await asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True)


async def test_concurrent_logins_joins_and_leaves(pair):
    clients = await clients_on(pair, 24)
    try:
        ids = await asyncio.gather(*(c.login("same-name") for c in clients))
        assert len(set(ids)) == len(ids)
        admin_a, admin_b, *rest = clients
        s1 = (await admin_a.add_session("race-1"))["sessionId"]
        s2 = (await admin_b.add_session("race-2"))["sessionId"]
        joins = await asyncio.gather(*(c.join_session(s1 if i % 3 else s2) for i, c in enumerate(rest)))
        assert all(j["sessionId"] in (s1, s2) for j in joins)
        leavers = rest[::2]
        await asyncio.gather(admin_a.leave_session(), *(c.leave_session() for c in leavers))
        dump = await identical_replicas(admin_a, admin_b)
        check_sessions(dump)
        members = {s["sessionId"]: s["sessionUsers"] for s in dump["sessions"]}
        stay = [c.user_id for c in rest if c not in leavers]
        assert sorted(members[s1] + members[s2]) == sorted([admin_b.user_id, *stay])
        assert admin_a.user_id not in members[s1]  # left, but still the administrator
        nodes = {u["node"] for u in dump["users"] if u["userId"] in ids}
        assert len(nodes) == 2
    finally:
        await close(clients)


ACTIONS = st.lists(st.sampled_from(["join0", "join1", "leave"]), min_size=1, max_size=4)


@given(plans=st.lists(ACTIONS, min_size=6, max_size=6))
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_random_interleavings_converge(pair, plans):
    asyncio.run(interleave(pair, plans))


async def interleave(pair, plans: list[list[str]]) -> None:
    clients = await clients_on(pair, len(plans))
    try:
        for i, c in enumerate(clients):
            await c.login(f"h{i}")
        sessions = [(await c.add_session(f"h{i}"))["sessionId"] for i, c in enumerate(clients[:2])]
        expected: dict[str, str | None] = {clients[0].user_id: sessions[0], clients[1].user_id: sessions[1]}
        for c in clients[2:]:
            expected[c.user_id] = None

        async def play(client: OrchestratorClient, plan: list[str]) -> None:
            for action in plan:
                try:
                    if action == "leave":
                        await client.leave_session()
                        expected[client.user_id] = None
                    else:
                        target = sessions[int(action[-1])]
                        await client.join_session(target)
                        expected[client.user_id] = target
                except OrchestratorError as exc:
                    assert exc.code in (602, 603, 800), exc  # refused by the session rules, never lost

        await asyncio.gather(*(play(c, p) for c, p in zip(clients, plans, strict=True)))
        dump = await identical_replicas(clients[0], clients[1])
        check_sessions(dump)
        actual = {uid: None for uid in expected}
        for session in dump["sessions"]:
            if session["sessionId"] in sessions:
                for uid in session["sessionUsers"]:
                    actual[uid] = session["sessionId"]
        assert actual == expected
    finally:
        await close(clients)
