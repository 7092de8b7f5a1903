"""Property tests of the request parser and body decoders: any split of the input gives the same
result, and any garbage gives an HttpError, never another exception."""

from __future__ import annotations

import socket

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.dash.http1 import ChunkedBody, HttpError, LengthBody, parse_head


def _feed(decoder, data: bytes, cuts: list[int]) -> tuple[bytes, bytes | None]:
    out, rest, start = [], None, 0
    for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
        if rest is not None:
            break
        pieces, rest = decoder.feed(data[start:cut])
        out += pieces
        start = cut
    if rest is not None:
        rest += data[start:]
    return b"".join(bytes(p) for p in out), rest


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), max_size=8), st.lists(st.integers(0, 5000), max_size=12),
       st.binary(max_size=20), st.booleans())
def test_chunked_decoder_any_split(parts, cuts, tail, trailer):
    wire = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in parts)
    wire += b"0\r\n" + (b"X-Trailer: 1\r\n" if trailer else b"") + b"\r\n"
    body, rest = _feed(ChunkedBody(1024), wire + tail, cuts)
    assert body == b"".join(parts) and rest == tail


@given(st.binary(max_size=400), st.integers(0, 400), st.lists(st.integers(0, 500), max_size=6))
def test_length_decoder_any_split(data, length, cuts):
    body, rest = _feed(LengthBody(length), data, cuts)
    if length <= len(data):
        assert (body, rest) == (data[:length], data[length:])
    else:
        assert (body, rest) == (data, None)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_chunked_body_raises_only_http_error(data):
    try:
        ChunkedBody(64).feed(data)
    except HttpError as exc:
        assert exc.status in (400, 431)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_head_raises_only_http_error(data):
    try:
        req = parse_head(data, 10)
    except HttpError as exc:
        assert exc.status in (400, 405, 431, 501, 505)
    else:
        assert req.target.startswith("/")


def test_worker_survives_garbage(worker):
    blobs = [b"\x00" * 100, b"GET / HTTP/1.1\r\n" + b"\xff" * 50 + b"\r\n\r\n", b"\r\n" * 5000,
             b"PUT /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
             b"GET /%00 HTTP/1.1\r\n\r\n",
             b"POST /x HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n"]
    for blob in blobs:
        with socket.create_connection(("127.0.0.1", worker.port), timeout=5) as s:
            s.sendall(blob)
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
    assert httpx.get(worker.base + "/healthz").json()["status"] == "ok"
