"""GetNTPTime source order against a real NTP responder on loopback; S12 operator rights; probes."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import ntplib
import pytest

from orchestrator.client import OrchestratorClient, OrchestratorError

OFFSET_S = 1000.0  # the responder's clock runs this far ahead, so its answers are recognisable


class NtpResponder:
    """A minimal NTP server on 127.0.0.1 whose clock is `offset_s` ahead of the system clock."""

    def __init__(self, offset_s: float) -> None:
        self.offset_s = offset_s
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.requests = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            request = ntplib.NTPPacket()
            request.from_data(data)
            now = ntplib.system_to_ntp_time(time.time() + self.offset_s)
            reply = ntplib.NTPPacket(version=3, mode=4, tx_timestamp=now)
            reply.stratum = 2
            reply.orig_timestamp = request.tx_timestamp
            reply.recv_timestamp = now
            reply.ref_timestamp = now
            self.sock.sendto(reply.to_data(), addr)
            self.requests += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def ntp_responder() -> Iterator[NtpResponder]:
    responder = NtpResponder(OFFSET_S)
    yield responder
    responder.close()


def dead_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def ntp_body(server) -> dict:
    async with OrchestratorClient(server.url) as client:
        return await client.get_ntp_time()


async def wait_for_source(server, predicate, timeout_s: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        body = await ntp_body(server)
        if predicate(body) or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.1)


async def test_first_answering_source_wins(server_factory, ntp_responder):
    dead = dead_udp_port()
    servers = f"127.0.0.1:{dead},127.0.0.1:{ntp_responder.port},localtime"
    srv = server_factory(env={"ORCHESTRATOR_NTP_SERVERS": servers, "ORCHESTRATOR_NTP_TIMEOUT_S": "0.3"})
    body = await wait_for_source(srv, lambda b: b["ntpTimeMs"] / 1000 - time.time() > OFFSET_S / 2)
    assert abs(body["ntpTimeMs"] / 1000 - (time.time() + OFFSET_S)) < 5
    assert ntp_responder.requests >= 1


async def test_localtime_fallback_when_no_server_answers(server_factory):
    servers = f"127.0.0.1:{dead_udp_port()},localtime"
    srv = server_factory("--ntp-servers", servers, "--ntp-timeout-s", "0.2")
    body = await ntp_body(srv)
    assert abs(body["ntpTimeMs"] / 1000 - time.time()) < 5


async def test_no_working_source_is_error_2001(server_factory):
    srv = server_factory("--ntp-servers", f"127.0.0.1:{dead_udp_port()}", "--ntp-timeout-s", "0.2")
    async with OrchestratorClient(srv.url) as client:
        with pytest.raises(OrchestratorError) as err:
            await client.get_ntp_time()
        assert (err.value.code, err.value.message) == (2001, "Could not get NTP time")


async def test_ntp_answer_does_not_wait_for_network(server_factory):
    # Sources that never answer must not delay the command: the cached value is served.
    srv = server_factory("--ntp-servers", f"127.0.0.1:{dead_udp_port()},localtime", "--ntp-timeout-s", "3")
    async with OrchestratorClient(srv.url) as client:
        started = time.monotonic()
        await client.get_ntp_time()
        assert time.monotonic() - started < 1.0


# S12 ----------------------------------------------------------------------------------------

OPERATOR_COMMANDS = ("DumpData", "ResetOrchestrator", "TerminateOrchestrator")


async def test_s12_untrusted_peer_is_refused(server_factory):
    srv = server_factory("--trusted-networks", "192.0.2.0/24")
    async with OrchestratorClient(srv.url) as client:
        for command in OPERATOR_COMMANDS:
            with pytest.raises(OrchestratorError) as err:
                await client.call(command, {})
            assert err.value.code == 5004
        await client.login("still-fine")
    assert srv.proc.poll() is None


async def test_s12_trusted_peer_dumps_and_resets(server_factory):
    srv = server_factory()  # default: loopback is trusted
    async with OrchestratorClient(srv.url) as user, OrchestratorClient(srv.url) as operator:
        await user.login("member")
        session = await user.add_session("s")
        dump = await operator.dump_data()
        assert {"id", "sessions", "users"} <= dump.keys()
        assert dump["sessions"][0]["sessionId"] == session["sessionId"]
        assert "sessionUserDefinitions" not in dump["sessions"][0]
        assert dump["users"][0]["userName"] == "member"
        await operator.reset_orchestrator()
        assert (await user.next_event("SessionClosed"))[1] == ({},)
    async with OrchestratorClient(srv.url) as operator:
        dump = await operator.dump_data()
        assert dump["sessions"] == [] and dump["users"] == []


async def test_s12_token_required_when_configured(server_factory):
    srv = server_factory(env={"ORCHESTRATOR_OPERATOR_TOKEN": "s3cret"})
    async with OrchestratorClient(srv.url) as anonymous:  # loopback, but no token: refused
        with pytest.raises(OrchestratorError) as err:
            await anonymous.dump_data()
        assert err.value.code == 5004
        with pytest.raises(OrchestratorError):
            await anonymous.call("DumpData", {"operatorToken": "wrong"})
        assert "users" in await anonymous.call("DumpData", {"operatorToken": "s3cret"})
    async with OrchestratorClient(srv.url, operator_token="s3cret") as operator:  # token in connect auth
        assert "users" in await operator.call("DumpData", {})
        await operator.terminate_orchestrator()
    assert srv.proc.wait(10) == 0


def test_cli_dump_logs_and_terminate(server_factory):
    import subprocess
    import sys
    srv = server_factory()
    dump = subprocess.run([sys.executable, "-m", "orchestrator.cli", "dump", "--url", srv.url],
                          capture_output=True, text=True, timeout=30)
    assert dump.returncode == 0 and '"sessions": []' in dump.stdout
    logs = subprocess.run([sys.executable, "-m", "orchestrator.cli", "logs", "--url", srv.url],
                          capture_output=True, text=True, timeout=30)
    assert logs.returncode == 0 and "orchestrator starting on" in logs.stdout
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "terminate", "--url", srv.url],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    assert srv.proc.wait(10) == 0


def test_probes(server, http):
    assert http(f"{server.url}/livez") == (200, {"status": "alive"})
    status, body = http(f"{server.url}/readyz")
    assert status == 200 and body["status"] == "ready"
    assert http(f"{server.url}/nope")[0] == 404
