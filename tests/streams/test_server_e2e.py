"""End to end: `orchestrator serve` with a streams config, real clients, real worker processes."""

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import psutil
import pytest

from orchestrator.client import OrchestratorClient, OrchestratorError

ROOT = Path(__file__).resolve().parents[2]


def _log_file(path: Path):
    return path.open("wb")


def _worker_pid(run_dir: Path, name: str) -> int:
    return json.loads((run_dir / f"{name}.worker.pid").read_text())["pid"]


async def _worker_changed(client: OrchestratorClient) -> dict:
    while True:
        _, (event,) = await client.next_event("SessionUpdated", timeout_s=15)
        if event["eventId"] == "STREAM_WORKER_CHANGED":
            return event["eventData"]


@pytest.fixture
async def server(h, tmp_path):
    """A real orchestrator process with the shipped tcpreflector and dash workers (one port each)."""
    port = h.free_ports(1)[0]
    log = _log_file(tmp_path / "server.log")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orchestrator.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--config", str(h.shipped_with_free_ports(tmp_path, ("tcpreflector", "dash"), 1)),
        "--run-dir", str(tmp_path / "run"),
        cwd=ROOT, env={**os.environ, "ORCHESTRATOR_NTP_SERVERS": "localtime"}, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        for _ in range(400):  # no event tells when another process starts listening
            assert proc.returncode is None, "server exited; see server.log"
            try:
                async with http.get(f"{url}/readyz") as r:
                    if r.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    yield proc, url, tmp_path / "run"
    if proc.returncode is None:
        proc.kill()
        await proc.wait()
    log.close()


def workers_of(run_dir: Path) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter():
        try:
            if any(str(run_dir) in a for a in p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:
            continue
    return found


async def test_sessions_get_worker_urls_and_serve_stops_its_workers(server):
    proc, url, run_dir = server
    async with OrchestratorClient(url) as a, OrchestratorClient(url) as b, OrchestratorClient(url) as c:
        for client, name in ((a, "a"), (b, "b"), (c, "c")):
            await client.login(name)
        session = await a.add_session("t", protocol="tcpreflector")
        gen = session["sessionUserDefinitions"][0]["sfuData"]["url_gen"]
        assert gen.startswith("tcp://127.0.0.1:")
        joined = await b.join_session(session["sessionId"])
        assert [u["sfuData"]["url_gen"] for u in joined["sessionUserDefinitions"]] == [gen, gen]
        _, writer = await asyncio.open_connection(urlsplit(gen).hostname, urlsplit(gen).port)
        writer.close()

        os.kill(_worker_pid(run_dir, f"tcpreflector-{urlsplit(gen).port}"), signal.SIGKILL)
        for client in (a, b):  # restarted on the same port, members told
            changed = await _worker_changed(client)
            assert changed["sessionId"] == session["sessionId"]
            assert {u: d["url_gen"] for u, d in changed["users"].items()} == {a.user_id: gen, b.user_id: gen}

        with pytest.raises(OrchestratorError) as info:  # the only tcpreflector port is taken
            await c.add_session("t2", protocol="tcpreflector")
        assert info.value.code == 5007
        dash = await c.add_session("d", protocol="dash")
        me = dash["sessionUserDefinitions"][0]
        assert me["sfuData"]["url_gen"].endswith(f"/{dash['sessionId']}/{me['userId']}/")
    running = workers_of(run_dir)
    assert len(running) >= 2
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 20) == 0
    assert not workers_of(run_dir)
