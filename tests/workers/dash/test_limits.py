"""Limits: sizes, total memory with eviction, idle TTL, connection cap, timeouts, stalled readers."""

from __future__ import annotations

import time

import httpx
import pytest


def test_chunked_upload_over_resource_limit_gets_413(spawn, ns, raw):
    wk = spawn({"max_resource_bytes": 1000})
    w = raw(wk.port)
    w.send(f"POST {ns}big HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    r = raw(wk.port)
    r.send(f"GET {ns}big HTTP/1.1\r\n\r\n")
    assert r.head()[0] == 200
    w.send(b"3e8\r\n" + b"a" * 1000 + b"\r\n")  # exactly at the limit: fine
    assert r.chunk() == b"a" * 1000
    w.send(b"1\r\nb\r\n")
    assert w.response().status == 413
    with pytest.raises(EOFError):
        r.chunk()
    assert wk.stats()["aborted_uploads"] == 1


def test_eviction_of_oldest_completed(spawn, ns):
    wk = spawn({"max_resource_bytes": 100_000, "max_total_bytes": 250_000, "long_poll_ms": 0})
    with httpx.Client(base_url=wk.base) as c:
        for i in range(3):
            assert c.put(f"{ns}r{i}", content=bytes([i]) * 80_000).status_code == 200
        c.get(f"{ns}r0")  # reading does not protect it: the order is completion order
        assert c.put(f"{ns}r3", content=b"3" * 80_000).status_code == 200
        assert c.get(f"{ns}r0").status_code == 404
        assert [c.get(f"{ns}r{i}").content[:1] for i in (1, 2, 3)] == [b"\x01", b"\x02", b"3"]
        s = c.get("/stats").json()
    assert s["evictions"] == 1 and s["resources"] == 3 and s["bytes_stored"] <= 250_000


def test_empty_resources_are_charged_too(spawn, ns, raw):
    wk = spawn({"max_resource_bytes": 10_000, "max_total_bytes": 50_000})
    c = raw(wk.port)
    for i in range(200):  # each costs its bookkeeping, not 0 bytes
        c.send(f"PUT {ns}empty-{i} HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        assert c.response().status == 200
    s = wk.stats()
    assert s["bytes_stored"] <= 50_000 and s["resources"] < 50 and s["evictions"] > 150


def test_store_full_of_unfinished_uploads_gives_507(spawn, ns, raw):
    wk = spawn({"max_resource_bytes": 100_000, "max_total_bytes": 150_000})
    a = raw(wk.port)
    a.send(f"POST {ns}a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n11170\r\n" + "a" * 70000 + "\r\n")
    g = raw(wk.port)
    g.send(f"GET {ns}a HTTP/1.1\r\n\r\n")
    assert g.head()[0] == 200 and len(g.chunk() or b"") > 0  # a's first chunk is stored
    b = raw(wk.port)
    b.send(f"PUT {ns}b HTTP/1.1\r\nContent-Length: 90000\r\n\r\n".encode() + b"b" * 90000)
    assert b.response().status == 507
    assert wk.stats()["drops"]["store_full"] == 1


def test_idle_namespace_expires(spawn, ns, raw):
    wk = spawn({"idle_ttl_s": 0.5, "long_poll_ms": 0})
    other = ns.replace("/u1/", "/u2/")
    with httpx.Client(base_url=wk.base) as c:
        c.put(ns + "init.mp4", content=b"init")
        c.put(other + "init.mp4", content=b"init")
        # u2 keeps writing, so its old init segment stays; u1 is silent and expires
        w = raw(wk.port)
        w.send(f"POST {other}seg HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        deadline = time.monotonic() + 5
        while c.head(ns + "init.mp4").status_code == 200:
            assert time.monotonic() < deadline, "u1 never expired"
            w.send(b"1\r\nx\r\n")
            time.sleep(0.05)  # the writer's frame pace
        assert c.get(other + "init.mp4").content == b"init"
        assert c.get("/stats").json()["expired"] == 1


def test_connection_cap(spawn, raw):
    wk = spawn({"max_connections": 3})
    held = [raw(wk.port) for _ in range(3)]
    held[0].send("GET /healthz HTTP/1.1\r\n\r\n")
    assert held[0].response().status == 200  # the first three are served
    extra = raw(wk.port)
    r = extra.response()
    assert r.status == 503 and r.headers["connection"] == "close"
    held[2].close()
    held[0].send("GET /stats HTTP/1.1\r\n\r\n")
    assert b'"connection_cap": 1' in held[0].response().body


def test_header_and_keepalive_timeouts(spawn, raw):
    wk = spawn({"header_timeout_s": 0.3, "keepalive_timeout_s": 0.3})
    slow = raw(wk.port)
    slow.send("GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finishes its head
    assert slow.response().status == 408
    idle = raw(wk.port)
    idle.send("GET /healthz HTTP/1.1\r\n\r\n")
    assert idle.response().status == 200
    t0 = time.monotonic()
    assert idle.closed()  # then silently closed when idle
    assert time.monotonic() - t0 < 3


def test_stalled_reader_slows_nobody_and_is_dropped(spawn, ns, raw):
    wk = spawn({"reader_buffer_bytes": 65536, "reader_stall_timeout_s": 1.0})
    path = ns + "big.m4s"
    stalled = raw(wk.port, rcvbuf=4096)
    w = raw(wk.port)
    w.send(f"POST {path} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    stalled.send(f"GET {path} HTTP/1.1\r\n\r\n")  # long-polls, then never reads
    fast = raw(wk.port)
    fast.send(f"GET {path} HTTP/1.1\r\n\r\n")
    assert fast.head()[0] == 200
    chunk = bytes(range(256)) * 1024
    total = 0
    t0 = time.monotonic()
    for _ in range(64):  # 16 MiB: far more than the stalled reader's socket buffers
        w.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        got = b""
        while len(got) < len(chunk):
            got += fast.chunk() or b""
        assert got == chunk  # the active reader keeps pace with the writer
        total += len(chunk)
    w.send(b"0\r\n\r\n")
    assert w.response().status == 200
    assert fast.chunk() is None
    assert time.monotonic() - t0 < 8
    s = wk.wait_stats(lambda s: s["drops"].get("reader_stalled") == 1, timeout=5)
    assert s["readers"] == 0
    status, _, _ = stalled.head()
    assert status == 200
    with pytest.raises(EOFError):
        while stalled.chunk() is not None:
            pass
