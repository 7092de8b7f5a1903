"""Failure semantics: an interrupted upload is never presented to readers as a complete resource."""

from __future__ import annotations

import httpx
import pytest


def _open_upload(raw, port, path, first=b"part-1"):
    w = raw(port)
    head = f"POST {path} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    w.send(head + b"%x\r\n%s\r\n" % (len(first), first))
    return w


def _reader(raw, port, path):
    r = raw(port)
    r.send(f"GET {path} HTTP/1.1\r\n\r\n")
    assert r.head()[0] == 200
    return r


def test_writer_disconnect_aborts_readers(worker, ns, raw):
    path = ns + "seg-7.m4s"
    before = worker.stats()["aborted_uploads"]
    w = _open_upload(raw, worker.port, path)
    r = _reader(raw, worker.port, path)
    assert r.chunk() == b"part-1"
    w.send(b"10\r\nhalf")  # dies in the middle of a 16-byte chunk
    w.close()
    with pytest.raises(EOFError):
        while r.chunk() is not None:
            pass
    assert r.buf == b""  # only real bytes were sent, no padding, no terminating chunk
    s = worker.wait_stats(lambda s: s["aborted_uploads"] == before + 1)
    assert s["drops"]["reader_aborted"] >= 1
    # the failed resource is gone: a new reader long-polls and gets 404, not the partial data
    with httpx.Client(base_url=worker.base) as c:
        assert c.get(path).status_code == 404


def test_httpx_reader_sees_error_not_short_body(worker, ns, raw):
    path = ns + "seg-8.m4s"
    w = _open_upload(raw, worker.port, path, b"x" * 1000)
    with httpx.Client(base_url=worker.base) as c, c.stream("GET", path) as resp:
        assert resp.status_code == 200
        it = resp.iter_raw()
        assert next(it) == b"x" * 1000
        w.close()
        with pytest.raises(httpx.RemoteProtocolError):
            for _ in it:
                pass


def test_short_content_length_upload_aborts(worker, ns, raw):
    path = ns + "short"
    w = raw(worker.port)
    w.send(f"PUT {path} HTTP/1.1\r\nContent-Length: 100\r\n\r\n".encode() + b"y" * 40)
    r = _reader(raw, worker.port, path)
    assert r.chunk() == b"y" * 40
    w.sock.shutdown(1)  # half-close: the server sees EOF before the declared length
    with pytest.raises(EOFError):
        r.chunk()
    assert w.closed()


def test_malformed_chunk_fails_upload(worker, ns, raw):
    path = ns + "bad"
    w = _open_upload(raw, worker.port, path)
    r = _reader(raw, worker.port, path)
    assert r.chunk() == b"part-1"
    w.send(b"3\r\nabcXX")  # chunk data not followed by CRLF
    assert w.response().status == 400
    with pytest.raises(EOFError):
        r.chunk()


def test_upload_idle_timeout(spawn, ns, raw):
    wk = spawn({"upload_idle_timeout_s": 0.3})
    path = ns + "stuck"
    w = _open_upload(raw, wk.port, path)
    r = _reader(raw, wk.port, path)
    assert r.chunk() == b"part-1"
    with pytest.raises(EOFError):
        r.chunk()  # writer went silent: aborted after the idle timeout
    assert w.closed()
    s = wk.stats()
    assert s["drops"]["upload_timeout"] == 1 and s["aborted_uploads"] == 1


def test_replacing_unfinished_upload_aborts_old_one(worker, ns, raw, encode_chunks):
    path = ns + "twice"
    old = _open_upload(raw, worker.port, path, b"old")
    r = _reader(raw, worker.port, path)
    assert r.chunk() == b"old"
    new = raw(worker.port)
    new.send(f"PUT {path} HTTP/1.1\r\nContent-Length: 3\r\n\r\nnew")
    assert new.response().status == 200
    with pytest.raises(EOFError):
        r.chunk()
    old.send(encode_chunks(b"more"))
    assert old.response().status == 409  # its upload was superseded and dropped
    with httpx.Client(base_url=worker.base) as c:
        assert c.get(path).content == b"new"


def test_delete_during_upload(worker, ns, raw, encode_chunks):
    path = ns + "del"
    w = _open_upload(raw, worker.port, path)
    r = _reader(raw, worker.port, path)
    assert r.chunk() == b"part-1"
    with httpx.Client(base_url=worker.base) as c:
        assert c.delete(path).status_code == 200
        with pytest.raises(EOFError):
            r.chunk()
        w.send(encode_chunks(b"rest"))
        assert w.response().status == 409
        assert c.head(path).status_code == 404


def test_http10_reader_of_failed_upload_gets_reset(worker, ns, raw):
    path = ns + "old-client"
    w = _open_upload(raw, worker.port, path)
    r = raw(worker.port)
    r.send(f"GET {path} HTTP/1.0\r\n\r\n")
    r.read_until(b"\r\n\r\n")
    assert r.read_exact(6) == b"part-1"  # close-delimited body, no chunk framing
    w.close()
    with pytest.raises(ConnectionResetError):  # a clean EOF would pass the truncated body as complete
        while r.sock.recv(65536):
            pass
