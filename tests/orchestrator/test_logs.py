"""Logs: JSON lines with request context when asked; nothing per packet at info level."""

from __future__ import annotations

import json

from orchestrator.client import OrchestratorClient


async def test_json_logs_carry_context_and_no_per_packet_lines(server_factory):
    srv = server_factory("--log-format", "json", "--log-level", "info")
    async with OrchestratorClient(srv.url) as a, OrchestratorClient(srv.url) as b:
        await a.login("a")
        await b.login("b")
        session = await a.add_session("logged")
        await b.join_session(session["sessionId"])
        await b.register_for_data_stream(a.user_id, "k")
        for _ in range(50):
            await a.send_data("k", b"p" * 100)
        for _ in range(50):
            await b.next_event("DataReceived")
    srv.stop()
    records = [json.loads(line) for line in srv.log().splitlines() if line.startswith("{")]
    assert records, srv.log()
    created = [r for r in records if "created by" in r["msg"]]
    assert created and created[0]["user"] == a.user_id and created[0]["level"] == "info"
    assert {"ts", "level", "logger", "msg"} <= created[0].keys()
    assert len(records) < 40  # 50 frames, 50 deliveries, a dozen commands: no line per packet
    assert all(not line.strip() or line.startswith("{") for line in srv.log().splitlines())
