"""The worker process contract: flags, settings errors, start-up failure, HTTP endpoints, signals."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from .conftest import ROOT, SfuProcess, free_tcp_port


def run_worker(*args: str, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "workers.webrtc", "--host", "127.0.0.1", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"max_peers": 4, "bogus": 1}, "setting bogus: Extra inputs are not permitted"),
        ({"max_peers": "4"}, "setting max_peers: Input should be a valid integer"),
        ({"max_peers": 0}, "setting max_peers: Input should be greater than or equal to 1"),
        ({"uvloop": 1}, "setting uvloop: Input should be a valid boolean"),
        ({"public_ip": "not-an-ip"}, "setting public_ip: Value error"),
        ({"udp_ports": "9:1"}, "setting udp_ports: Value error"),
        ([1, 2], "top level must be a mapping"),
    ],
)
def test_bad_settings_exit_2_with_one_line_naming_the_key(
    tmp_path: Path, content: object, message: str
) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps(content))
    result = run_worker("--port", "1", "--settings", str(path))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr


def test_bad_flags_and_yaml(tmp_path: Path) -> None:
    result = run_worker("--port", "1", "--udp-ports", "70000:70001")
    assert (result.returncode, result.stderr.count("\n")) == (2, 1)
    assert "setting udp_ports" in result.stderr
    path = tmp_path / "s.yaml"
    path.write_text("answer_timeout: 3\nice_addresses: [127.0.0.1]\nbroken: [\n")
    result = run_worker("--port", "1", "--settings", str(path))
    assert result.returncode == 2 and "not valid YAML/JSON" in result.stderr


def test_port_in_use_exits_1_with_a_reason() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = run_worker("--port", str(busy.getsockname()[1]))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("cannot listen on 127.0.0.1:")


async def test_http_endpoints(sfu: SfuProcess) -> None:
    assert (await sfu.get("/"))[0] == 200
    status, body = await sfu.get("/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    stats = await sfu.stats()
    for key in (
        "connections",
        "packets_in",
        "bytes_in",
        "packets_out",
        "bytes_out",
        "drops",
        "renegotiations",
        "tasks",
        "peer_list",
    ):
        assert key in stats
    assert (await sfu.get("/websocket"))[0] == 400  # not an upgrade


async def test_sigterm_closes_peers_and_exits_0_within_a_second(sfu: SfuProcess) -> None:
    peer = await sfu.peer(1)
    await peer.wait_connected()
    session = aiohttp.ClientSession()
    try:
        start = time.monotonic()
        sfu.proc.send_signal(signal.SIGTERM)
        await peer.wait_closed(5)
        assert (peer.close_code, peer.close_reason) == (1001, "server shutting down")
        assert sfu.proc.wait(2) == 0
        assert time.monotonic() - start < 1.0
    finally:
        await session.close()
    assert "Traceback" not in sfu.stderr()


def test_sigint_exits_0_and_logs_one_line_per_record() -> None:
    port = free_tcp_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.webrtc", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line.startswith("INFO workers.webrtc.cli: listening on http://127.0.0.1:")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(3) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
