"""HTTP semantics of the relay: uploads, streaming GETs, long-poll, DELETE, HEAD, keep-alive, framing."""

from __future__ import annotations

import time

import httpx


def test_put_then_get_roundtrip(worker, ns):
    body = bytes(range(256)) * 40
    with httpx.Client(base_url=worker.base) as c:
        r = c.put(ns + "a/seg-1.m4s", content=body, headers={"Content-Type": "video/iso.segment"})
        assert (r.status_code, r.content) == (200, b"")
        g = c.get(ns + "a/seg-1.m4s")
        assert g.status_code == 200
        assert g.headers["transfer-encoding"] == "chunked"
        assert g.headers["content-type"] == "video/iso.segment"
        assert g.content == body


def test_post_replaces_and_empty_post_creates(worker, ns):
    with httpx.Client(base_url=worker.base) as c:
        assert c.post(ns, content=b"").status_code == 200
        assert c.get(ns).content == b""
        c.post(ns + "x.mpd", content=b"first version")
        c.post(ns + "x.mpd", content=b"v2")
        assert c.get(ns + "x.mpd").content == b"v2"


def test_chunk_reaches_reader_before_upload_ends(worker, ns, raw, encode_chunks):
    path = ns + "live.m4s"
    w = raw(worker.port)
    w.send(f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    w.send(b"5\r\nhello\r\n")
    r = raw(worker.port)
    r.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, headers = r.head()
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    assert r.chunk() == b"hello"
    w.send(b"6\r\n world\r\n")
    assert r.chunk() == b" world"  # arrives while the upload is still open
    w.send(b"0\r\n\r\n")
    assert r.chunk() is None
    assert w.response().status == 200


def test_expect_100_continue_and_case_insensitive_headers(worker, ns, raw):
    w = raw(worker.port)
    w.send(f"PUT {ns}e HTTP/1.1\r\nhost: x\r\ncontent-LENGTH: 4\r\nEXPECT: 100-Continue\r\n\r\n")
    assert w.read_until(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    w.send(b"abcd")
    assert w.response().status == 200
    w.send(f"PUT {ns}f HTTP/1.1\r\nTRANSFER-ENCODING: Chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n")
    assert w.response().status == 200
    w.send(f"GET {ns}f HTTP/1.1\r\nCONNECTION: Keep-Alive\r\n\r\n")
    assert w.response().body == b"xyz"


def test_expect_with_too_large_length_is_refused_before_body(spawn, ns, raw):
    wk = spawn({"max_resource_bytes": 1000})
    w = raw(wk.port)
    w.send(f"PUT {ns}big HTTP/1.1\r\nContent-Length: 1001\r\nExpect: 100-continue\r\n\r\n")
    r = w.response()
    assert r.status == 413 and r.headers["connection"] == "close"
    assert w.closed()


def test_keep_alive_and_pipelining(worker, ns, raw, encode_chunks):
    c = raw(worker.port)
    for i in range(3):
        c.send(f"PUT {ns}k{i} HTTP/1.1\r\nContent-Length: 2\r\n\r\nk{i}")
        assert c.response().status == 200
    # three requests in one write, answered in order on the same connection
    c.send("".join(f"GET {ns}k{i} HTTP/1.1\r\n\r\n" for i in range(3)) + f"HEAD {ns}k0 HTTP/1.1\r\n\r\n")
    assert [c.response().body for _ in range(3)] == [b"k0", b"k1", b"k2"]
    h = c.response(head_only=True)
    assert h.status == 200 and h.headers["content-length"] == "2"
    c.send(f"DELETE {ns}k1 HTTP/1.1\r\n\r\nGET {ns}k2 HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert c.response().status == 200
    last = c.response()
    assert last.body == b"k2" and last.headers["connection"] == "close"
    assert c.closed()


def test_head(worker, ns, raw):
    c = raw(worker.port)
    c.send(f"PUT {ns}h HTTP/1.1\r\nContent-Type: application/dash+xml\r\nContent-Length: 5\r\n\r\nhello")
    assert c.response().status == 200
    c.send(f"HEAD {ns}h HTTP/1.1\r\n\r\n")
    r = c.response(head_only=True)
    assert (r.status, r.headers["content-length"]) == (200, "5")
    assert r.headers["content-type"] == "application/dash+xml"
    t0 = time.monotonic()
    c.send(f"HEAD {ns}missing HTTP/1.1\r\n\r\n")
    assert c.response(head_only=True).status == 404
    assert time.monotonic() - t0 < 0.3  # HEAD answers at once, no long-poll
    w = raw(worker.port)
    w.send(f"POST {ns}growing HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n")
    g = raw(worker.port)
    g.send(f"GET {ns}growing HTTP/1.1\r\n\r\n")
    assert g.head()[0] == 200 and g.chunk() == b"a"  # the upload has begun
    c.send(f"HEAD {ns}growing HTTP/1.1\r\n\r\n")
    r = c.response(head_only=True)
    assert r.status == 200 and r.headers["transfer-encoding"] == "chunked"


def test_query_string_is_part_of_the_key(worker, ns):
    with httpx.Client(base_url=worker.base) as c:
        c.put(ns + "q?x=1", content=b"one")
        c.put(ns + "q?x=2", content=b"two")
        assert c.get(ns + "q?x=1").content == b"one"
        assert c.get(ns + "q?x=2").content == b"two"
        assert c.head(ns + "q").status_code == 404


def test_long_poll_wakes_on_creation(spawn, ns, raw):
    wk = spawn({"long_poll_ms": 10000})
    r = raw(wk.port)
    r.send(f"GET {ns}later.m4s HTTP/1.1\r\n\r\n")
    wk.wait_stats(lambda s: s["long_poll_waiters"] == 1)
    w = raw(wk.port)
    t0 = time.monotonic()
    w.send(f"PUT {ns}later.m4s HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
    status, _, _ = r.head()
    waited = time.monotonic() - t0
    assert status == 200 and waited < 1.0  # woken by the upload, far before the 10 s long-poll
    assert r.chunk() == b"abc" and r.chunk() is None
    assert wk.stats()["long_poll_waiters"] == 0


def test_long_poll_gives_404_after_timeout(worker, ns, raw):
    c = raw(worker.port)
    t0 = time.monotonic()
    c.send(f"GET {ns}never HTTP/1.1\r\n\r\n")
    assert c.response().status == 404
    assert 0.35 <= time.monotonic() - t0 < 3.0  # long_poll_ms is 400 for this worker
    c.send(f"PUT {ns}now HTTP/1.1\r\nContent-Length: 0\r\n\r\n")  # connection still usable
    assert c.response().status == 200


def test_delete_exact_and_anchored_wildcard(worker, ns):
    sess = ns.split("/")[1]
    other = f"/o{sess}/"
    with httpx.Client(base_url=worker.base) as c:
        for p in (f"/{sess}/u1/a", f"/{sess}/u2/b?x=1", f"/{sess}x/u1/c", f"/other/{sess}/u1/d", other + "e"):
            assert c.put(p, content=b"1").status_code == 200
        assert c.delete(f"/{sess}/u1/a").status_code == 200
        assert c.delete(f"/{sess}/u1/a").status_code == 404
        c.put(f"/{sess}/u1/a", content=b"1")
        assert c.delete(f"/{sess}/*").status_code == 200
        assert c.head(f"/{sess}/u1/a").status_code == 404
        assert c.head(f"/{sess}/u2/b?x=1").status_code == 404
        # anchored: neither a longer session id nor the same text deeper in a path matches
        for p in (f"/{sess}x/u1/c", f"/other/{sess}/u1/d", other + "e"):
            assert c.head(p).status_code == 200
        assert c.delete(f"/{sess}/*").status_code == 404
        assert c.delete(f"/{sess}x/*").status_code == 200


def test_reader_joining_mid_upload_gets_everything(worker, ns, raw):
    w = raw(worker.port)
    w.send(f"POST {ns}mid HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    for i in range(5):
        w.send(b"4\r\nc%03d\r\n" % i)
    readers = [raw(worker.port) for _ in range(3)]
    for r in readers:
        r.send(f"GET {ns}mid HTTP/1.1\r\n\r\n")
        assert r.head()[0] == 200
    w.send(b"4\r\nlast\r\n0\r\n\r\n")
    assert w.response().status == 200
    for r in readers:
        parts = []
        while (c := r.chunk()) is not None:
            parts.append(c)
        assert b"".join(parts) == b"c000c001c002c003c004last"


def test_complete_old_version_finishes_for_its_readers(worker, ns, raw):
    w = raw(worker.port)
    payload = b"x" * 4_000_000
    w.send(f"PUT {ns}v HTTP/1.1\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload)
    assert w.response().status == 200
    r = raw(worker.port)
    r.send(f"GET {ns}v HTTP/1.1\r\n\r\n")
    assert r.head()[0] == 200
    w.send(f"PUT {ns}v HTTP/1.1\r\nContent-Length: 2\r\n\r\nv2")  # replaced while being read
    assert w.response().status == 200
    parts = []
    while (c := r.chunk()) is not None:
        parts.append(c)
    assert b"".join(parts) == payload


def test_errors_are_answered_and_close(worker, ns, raw):
    cases = [
        ("BREW /x HTTP/1.1\r\n\r\n", 405),
        ("GET /x HTTP/2.0\r\n\r\n", 505),
        ("GET\r\n\r\n", 400),
        ("GET /x HTTP/1.1\r\nbad header\r\n\r\n", 400),
        (f"PUT {ns}y HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (f"PUT {ns}y HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (f"PUT {ns}y HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (f"PUT {ns}y HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (f"GET {ns}y HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 400),
        ("POST /stats HTTP/1.1\r\n\r\n", 405),
        (f"PUT {ns}y HTTP/1.1\r\nContent-Length: 1\r\nExpect: 200-ok\r\n\r\n", 417),
    ]
    for request, status in cases:
        c = raw(worker.port)
        c.send(request)
        r = c.response()
        assert r.status == status, request
        assert r.headers.get("connection") == "close"
        assert c.closed()
    assert worker.stats()["drops"]["bad_request"] >= 5


def test_header_limits(spawn, ns, raw):
    wk = spawn({"max_header_bytes": 1024, "max_headers": 10})
    c = raw(wk.port)
    c.send(f"GET {ns} HTTP/1.1\r\nX-Big: {'a' * 2000}\r\n\r\n")
    assert c.response().status == 431
    c = raw(wk.port)
    c.send(f"GET {ns} HTTP/1.1\r\n" + "".join(f"X-{i}: 1\r\n" for i in range(11)) + "\r\n")
    assert c.response().status == 431
    c = raw(wk.port)
    c.send(f"GET {ns} HTTP/1.1\r\nX-Big: {'a' * 2000}")  # never finished: refused once too long
    assert c.response().status == 431
    assert wk.stats()["drops"]["header_too_large"] == 3


def test_http10_reader_gets_length_delimited_body(worker, ns, raw):
    with httpx.Client(base_url=worker.base) as cl:
        cl.put(ns + "old", content=b"legacy")
    c = raw(worker.port)
    c.send(f"GET {ns}old HTTP/1.0\r\n\r\n")
    r = c.response()
    assert (r.status, r.headers["content-length"], r.body) == (200, "6", b"legacy")
    assert c.closed()


def test_healthz_and_stats(worker, ns):
    with httpx.Client(base_url=worker.base) as c:
        h = c.get("/healthz")
        assert h.status_code == 200 and h.json()["status"] == "ok"
        c.put(ns + "s", content=b"12345")
        c.get(ns + "s")
        s = c.get("/stats").json()
    keys = ("connections", "resources", "bytes_stored", "bytes_in", "bytes_out", "evictions", "not_found",
            "aborted_uploads", "long_poll_waiters", "drops", "chunks_in", "chunks_out", "readers", "uploads")
    for key in keys:
        assert key in s, key
    assert s["connections"] >= 1 and s["resources"] >= 1 and s["bytes_in"] >= 5 and s["bytes_out"] >= 5
