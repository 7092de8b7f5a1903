"""The process contract: signals, exit codes, one-line errors, settings from file and flags."""

from __future__ import annotations

import signal
import socket
import time

import pytest

from workers.tcp.settings import SettingsError, load_settings


async def test_sigterm_exits_zero_within_a_second(spawn, connect) -> None:
    worker = spawn({"lag_disconnect_s": 60})
    sender, reader = await connect.session(worker, 2)
    stalled = (await connect.session(worker, 1, rcvbuf=16384))[0]  # holds a backlog at the worker
    for i in range(20):
        await sender.send("alice/pointcloud/0", b"p" * 500_000, timestamp=i)
        await reader.recv_frame()
    await sender.send_raw(b"2,alice/pointcl")  # and a frame half-received
    await worker.until(lambda s: s["queued_frames"] > 0)
    started = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(2) == 0
    assert time.monotonic() - started < 1.0
    for client in (sender, reader, stalled):
        await client.closed_by_peer(2)


def test_sigint_exits_zero(spawn) -> None:
    worker = spawn()
    worker.proc.send_signal(signal.SIGINT)
    assert worker.proc.wait(2) == 0


@pytest.mark.parametrize(("text", "suffix", "needle"), [
    ("max_frame_bytes: 10\nbogus: 1\n", ".yaml", "unknown key 'bogus'"),
    ("queue: {frames: ten}\n", ".yaml", "queue.frames must be an integer"),
    ('{"queue": {"drop": "middle"}}', ".json", "queue.drop must be one of oldest, newest"),
    ('{"max_frame_bytes": 4294967296}', ".json", "max_frame_bytes must be between"),
    ("- just\n- a list\n", ".yaml", "must hold a mapping"),
    ("key: [unclosed\n", ".yaml", "not valid"),
])
def test_bad_settings_exit_2(run_worker, free_ports, text: str, suffix: str, needle: str) -> None:
    code, err = run_worker("--port", str(free_ports()), settings=text, suffix=suffix)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_bad_flags_exit_2(run_worker, free_ports) -> None:
    code, err = run_worker("--port", str(free_ports()), "--queue-frames", "0")
    assert code == 2 and "queue.frames must be between 1" in err
    code, err = run_worker("--port", str(free_ports()), "--lag-disconnect-s", "soon")
    assert code == 2 and "lag_disconnect_s must be a number" in err
    code, _ = run_worker("--no-such-flag")
    assert code == 2
    code, err = run_worker("--port", str(free_ports()), "--settings", "/nonexistent/settings.yaml")
    assert code == 2 and "cannot read" in err


def test_port_in_use_exits_1(run_worker, free_ports) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = run_worker("--host", "127.0.0.1", "--port", str(port))
        assert code == 1 and err == f"error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
        free = str(free_ports())
        code, err = run_worker("--host", "127.0.0.1", "--port", free, "--control-port", str(port))
        assert code == 1 and "(control)" in err and len(err.strip().splitlines()) == 1


async def test_flags_override_file(spawn, connect) -> None:
    worker = spawn({"max_connections": 1, "queue": {"frames": 5}}, "--max-connections", "3")
    await connect.session(worker, 3)
    extra = await connect(worker.port)
    assert await extra.closed_by_peer() == b""


def test_settings_merge(tmp_path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("queue: {frames: 4, drop: newest}\npriority_streams: ['*/audio/*', '*/voice/*']\n")
    s = load_settings(str(path), {"queue.bytes": 1000, "idle_timeout_s": 2})
    assert (s.queue.frames, s.queue.drop, s.queue.bytes, s.idle_timeout_s) == (4, "newest", 1000, 2.0)
    assert s.priority_streams == ("*/audio/*", "*/voice/*") and s.max_frame_bytes == 64 * 2**20
    with pytest.raises(SettingsError, match="write_buffer_low must not exceed"):
        load_settings(None, {"write_buffer_low": 10, "write_buffer_high": 5})
