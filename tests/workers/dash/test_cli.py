"""The worker process contract: exit codes, one-line errors, signals."""

from __future__ import annotations

import signal
import socket

import pytest


@pytest.mark.parametrize(("settings", "key"), [
    ({"long_pol_ms": 5}, "long_pol_ms: unknown key"),
    ({"max_resource_bytes": "big"}, "max_resource_bytes: expected an integer"),
    ({"max_connections": True}, "max_connections: expected an integer"),
    ({"idle_ttl_s": -1}, "idle_ttl_s: must be >="),
    ({"max_total_bytes": 10, "max_resource_bytes": 20}, "max_total_bytes: must be >= max_resource_bytes"),
    ({"session_tokens": ["a"]}, "session_tokens: expected a mapping"),
    ({"session_tokens": {"s": ""}}, "session_tokens.s: expected a non-empty string"),
    ([1, 2], "expected a mapping at top level"),
])
def test_bad_settings_exit_2(spawn, settings, key):
    w = spawn(settings, wait=False)
    assert w.proc.wait(10) == 2
    w.drainer.join(5)
    assert len(w.lines) == 1 and key in w.lines[0], w.lines


def test_unreadable_or_invalid_settings_file_exit_2(spawn, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [unclosed\n")
    for path in (bad, tmp_path / "missing.yaml"):
        w = spawn(args=("--settings", str(path)), wait=False)
        assert w.proc.wait(10) == 2
        w.drainer.join(5)
        assert len(w.lines) == 1 and str(path) in w.lines[0], w.lines


def test_yaml_settings_accepted(spawn, tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("# comment\nlong_poll_ms: 0\nsession_tokens:\n  s1: t1\n")
    w = spawn(args=("--settings", str(path)))
    assert w.stats()["connections"] == 1


def test_port_in_use_exits_1(spawn):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        w = spawn(args=("--port", str(s.getsockname()[1])), wait=False)
        assert w.proc.wait(10) == 1
    w.drainer.join(5)
    assert len(w.lines) == 1 and "cannot listen" in w.lines[0], w.lines


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_exits_0_within_1s_with_busy_connections(spawn, raw, sig, ns):
    w = spawn({"long_poll_ms": 30000})
    up = raw(w.port)
    up.send(f"POST {ns}s HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n")
    rd = raw(w.port)
    rd.send(f"GET {ns}s HTTP/1.1\r\n\r\n")
    assert rd.head()[0] == 200
    lp = raw(w.port)
    lp.send(f"GET {ns}never HTTP/1.1\r\n\r\n")
    idle = raw(w.port)
    w.wait_stats(lambda s: s["long_poll_waiters"] == 1 and s["connections"] >= 5)
    mark = len(w.lines)
    w.proc.send_signal(sig)
    assert w.proc.wait(1.0) == 0
    assert all(c.closed() for c in (up, rd, lp, idle))
    w.drainer.join(5)
    assert not [line for line in w.lines[mark:] if not line.startswith("INFO ")], w.lines
