"""SIGTERM drains: readiness fails, new work gets 5008, sessions are told, exit 0; a 2nd signal stops."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from orchestrator.client import OrchestratorClient, OrchestratorError


async def test_sigterm_drains_then_exits_zero(server_factory, http):
    srv = server_factory("--drain-grace-s", "20")
    async with OrchestratorClient(srv.url) as admin, OrchestratorClient(srv.url) as member, \
            OrchestratorClient(srv.url) as late:
        await admin.login("admin")
        await member.login("member")
        session = await admin.add_session("live")
        await member.join_session(session["sessionId"])
        await admin.next_event("SessionUpdated")
        srv.proc.send_signal(signal.SIGTERM)
        _, (event,) = await member.next_event("SessionUpdated")
        assert event == {"eventId": "ORCHESTRATOR_DRAINING", "eventData": {"graceSeconds": 20.0}}
        assert http(f"{srv.url}/readyz") == (503, {"status": "not ready", "reasons": ["draining"]})
        assert http(f"{srv.url}/livez")[0] == 200
        with pytest.raises(OrchestratorError) as err:
            await late.login("late")
        assert err.value.code == 5008
        await member.send_message(admin.user_id, "still working")  # live sessions carry on
        assert (await admin.next_event("MessageSent"))[1][0]["message"] == "still working"
        started = time.monotonic()
        await member.leave_session()
        await admin.leave_session()
        await admin.delete_session(session["sessionId"])  # the last session ends: the server stops
        assert await asyncio.to_thread(srv.proc.wait, 10) == 0
        assert time.monotonic() - started < 5
    assert "drained: no sessions left" in srv.log()


async def test_drain_grace_is_bounded(server_factory):
    srv = server_factory("--drain-grace-s", "1")
    async with OrchestratorClient(srv.url) as admin:
        await admin.login("admin")
        await admin.add_session("forever")
        started = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(srv.proc.wait, 15) == 0
        assert time.monotonic() - started < 8
    assert "drain grace over" in srv.log()


async def test_second_signal_stops_at_once(server_factory):
    srv = server_factory("--drain-grace-s", "60")
    async with OrchestratorClient(srv.url) as admin:
        await admin.login("admin")
        await admin.add_session("forever")
        srv.proc.send_signal(signal.SIGTERM)
        await admin.next_event("SessionUpdated")
        started = time.monotonic()
        srv.proc.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(srv.proc.wait, 15) == 0
        assert time.monotonic() - started < 8
    assert "orchestrator stopped" in srv.log()


def test_idle_server_stops_promptly(server_factory):
    srv = server_factory()
    started = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(10) == 0
    assert time.monotonic() - started < 3
