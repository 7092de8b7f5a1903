"""A session's stream worker belongs to the process that created it; every process renders the same
sfuData from the worker's description, and the worker is given back when the session closes."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import yaml

from orchestrator.client import OrchestratorClient, OrchestratorError

ROOT = Path(__file__).resolve().parents[2]


def tcpreflector_config(tmp_path: Path, port: int) -> Path:
    """config/streams.yaml as shipped, with only the TCP reflector, on loopback and a free port."""
    doc = yaml.safe_load((ROOT / "config" / "streams.yaml").read_text(encoding="utf-8"))
    doc["bind_host"] = "127.0.0.1"
    doc["workers"] = {"tcpreflector": {**doc["workers"]["tcpreflector"], "ports": [port]}}
    path = tmp_path / "streams.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


async def sessions_on_worker(client: OrchestratorClient) -> int:
    return (await client.dump_data())["workers"]["kinds"]["tcpreflector"]["sessions"]


async def test_member_on_another_process_gets_the_owners_worker_urls(redis_server, nodes, connect, h,
                                                                     tmp_path):
    state = redis_server.new_db()
    worker_port = h.harness.free_port()
    owner = nodes(state, "--config", str(tcpreflector_config(tmp_path, worker_port)))
    other = nodes(state)
    admin = await connect(owner.url, "admin")
    member = await connect(other.url, "member")
    session = await admin.add_session("reflected", protocol="tcpreflector")
    url = f"tcp://127.0.0.1:{worker_port}"
    assert session["sessionUserDefinitions"][0]["sfuData"]["url_gen"] == url
    joined = await member.join_session(session["sessionId"])
    assert [u["sfuData"]["url_gen"] for u in joined["sessionUserDefinitions"]] == [url, url]
    info = await member.get_session_info()
    assert info["sessionUserDefinitions"][1]["sfuData"]["url_gen"] == url
    assert await sessions_on_worker(admin) == 1
    assert (await member.dump_data())["workers"] == {"workers": []}  # no worker runs on that process
    _, (joined_event,) = await admin.next_event("SessionUpdated", timeout_s=5)
    assert joined_event["eventId"] == "USER_JOINED_SESSION"
    pid_file = next((tmp_path / "run").glob("tcpreflector-*.worker.pid"))
    os.kill(json.loads(pid_file.read_text())["pid"], signal.SIGKILL)  # the owner restarts it
    for client in (admin, member):  # both processes tell their members, with the same URLs
        _, (event,) = await client.next_event("SessionUpdated", timeout_s=20)
        assert event["eventId"] == "STREAM_WORKER_CHANGED"
        assert event["eventData"]["sessionId"] == session["sessionId"]
        assert {u["url_gen"] for u in event["eventData"]["users"].values()} == {url}
    await admin.disconnect()  # the administrator's process is the owner: the session closes there
    await member.next_event("SessionClosed", timeout_s=5)
    watcher = await connect(owner.url, "watcher")
    with pytest.raises(OrchestratorError):  # through the log: the owner has applied the logout
        await watcher.send_scene_event_to_user("nobody", b"barrier")
    assert await sessions_on_worker(watcher) == 0
