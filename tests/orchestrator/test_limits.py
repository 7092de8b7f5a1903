"""Flood limits against a real server: documented codes, counted drops, abusers cut off, others unaffected."""

from __future__ import annotations

import asyncio

import pytest
import socketio

from orchestrator.client import OrchestratorClient, OrchestratorError


async def test_command_rate_limit_then_abuse_disconnect(server_factory):
    srv = server_factory("--command-rate", "5", "--command-burst", "10", "--abuse-limit", "30")
    async with OrchestratorClient(srv.url) as flooder, OrchestratorClient(srv.url) as bystander:
        await bystander.login("calm")
        codes = []
        for _ in range(40):
            try:
                await flooder.get_orchestrator_version()
                codes.append(0)
            except OrchestratorError as exc:
                codes.append(exc.code)
            except (TimeoutError, socketio.exceptions.TimeoutError, socketio.exceptions.BadNamespaceError):
                break
        assert codes[:10] == [0] * 10 and 5006 in codes
        for _ in range(50):
            if not flooder.connected:
                break
            await asyncio.sleep(0.1)
        assert not flooder.connected
        assert "refused inputs" in srv.log()
        assert await bystander.get_sessions() == {}  # unaffected


async def test_session_and_membership_caps(server_factory):
    srv = server_factory("--max-sessions", "1", "--max-users-per-session", "2")
    async with OrchestratorClient(srv.url) as a, OrchestratorClient(srv.url) as b, \
            OrchestratorClient(srv.url) as c:
        for client, name in ((a, "a"), (b, "b"), (c, "c")):
            await client.login(name)
        session = await a.add_session("only")
        with pytest.raises(OrchestratorError) as err:
            await b.add_session("second")
        assert err.value.code == 5009
        await b.join_session(session["sessionId"])
        with pytest.raises(OrchestratorError) as err:
            await c.join_session(session["sessionId"])
        assert err.value.code == 5009


async def test_connection_cap(server_factory):
    srv = server_factory("--max-connections", "2")
    async with OrchestratorClient(srv.url), OrchestratorClient(srv.url):
        third = OrchestratorClient(srv.url)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await third.connect()
        await third.disconnect()
    async with OrchestratorClient(srv.url) as again:  # capacity comes back when clients leave
        assert await again.get_orchestrator_version()


async def test_data_byte_budget_drops_excess(server_factory):
    srv = server_factory("--data-rate-bytes", "100000", "--data-burst-bytes", "300000")
    async with OrchestratorClient(srv.url) as sender, OrchestratorClient(srv.url) as receiver:
        await sender.login("s")
        await receiver.login("r")
        session = await sender.add_session("s")
        await receiver.join_session(session["sessionId"])
        await receiver.register_for_data_stream(sender.user_id, "k")
        for _ in range(10):
            await sender.send_data("k", b"x" * 100_000)
        got = 0
        while True:
            try:
                await receiver.next_event("DataReceived", timeout_s=0.5)
                got += 1
            except TimeoutError:
                break
        assert 3 <= got <= 5  # the burst passes, the rest of a 1 MB flood is dropped
        with pytest.raises(OrchestratorError) as err:
            await sender._acked("SendData", "k", b"x" * 100_000)
        assert err.value.code == 5006
