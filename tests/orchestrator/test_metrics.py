"""/metrics reflects live state and counters (Prometheus text format, parsed by prometheus-client)."""

from __future__ import annotations

import asyncio
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from orchestrator.client import OrchestratorClient, OrchestratorError


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


async def test_metrics_follow_activity(server_factory):
    srv = server_factory()
    async with OrchestratorClient(srv.url) as a, OrchestratorClient(srv.url) as b:
        await a.login("a")
        await b.login("b")
        session = await a.add_session("m", protocol="socketio")
        await b.join_session(session["sessionId"])
        await b.register_for_data_stream(a.user_id, "k")
        for _ in range(5):
            await a.send_data("k", b"z" * 1000)
        for _ in range(5):
            await b.next_event("DataReceived")
        try:
            await a.join_session("nope")
        except OrchestratorError:
            pass
        await a.emit("NoSuchEvent", 1)
        await a.get_orchestrator_version()  # ordering: the junk event has been handled by now
        m = scrape(srv.url)
    assert m[("orchestrator_connections", ())] == 2
    assert m[("orchestrator_users", ())] == 2
    assert m[("orchestrator_sessions", (("protocol", "socketio"),))] == 1
    assert m[("orchestrator_commands_total", (("code", "0"), ("command", "Login")))] == 2
    assert m[("orchestrator_commands_total", (("code", "503"), ("command", "JoinSession")))] == 1
    assert m[("orchestrator_data_frames_in_total", ())] == 5
    assert m[("orchestrator_data_bytes_in_total", ())] == 5000
    assert m[("orchestrator_data_frames_out_total", ())] == 5
    assert m[("orchestrator_events_in_total", (("event", "SendData"),))] == 5
    assert m[("orchestrator_events_out_total", (("event", "SessionUpdated"),))] >= 1
    assert m[("orchestrator_rejected_inputs_total", (("reason", "unknown_event"),))] == 1
    assert m[("orchestrator_event_loop_lag_seconds", ())] >= 0
    assert ("orchestrator_gc_pause_seconds_total", ()) in m
    for _ in range(50):  # disconnects are processed asynchronously
        after = scrape(srv.url)
        if after[("orchestrator_connections", ())] == 0:
            break
        await asyncio.sleep(0.05)
    assert after[("orchestrator_connections", ())] == 0 and after[("orchestrator_users", ())] == 0
