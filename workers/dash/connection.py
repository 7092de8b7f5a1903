"""One client connection: an asyncio protocol driving a small HTTP/1.1 state machine.

Callbacks rather than coroutines, so that an uploaded chunk reaches every reader's socket inside
the very `data_received` call that brought it in: no queue, no task switch, no copy. A reader is
a cursor into the resource's shared chunk list; when its socket buffer passes the high watermark
it simply stops advancing (asyncio calls pause_writing) and catches up on resume_writing, so a
slow reader costs nobody else anything.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
import time
from typing import TYPE_CHECKING

from .http1 import ChunkedBody, HttpError, LengthBody, Request, parse_head, response_head
from .store import Resource

if TYPE_CHECKING:
    from .server import Server

log = logging.getLogger("workers.dash")

IDLE, BODY, BUSY, CLOSED = range(4)  # BUSY: streaming a GET or long-polling
CRLF = b"\r\n"
LAST_CHUNK = b"0\r\n\r\n"
_DROP_REASON = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 405: "bad_method",
                408: "header_timeout", 413: "too_large", 417: "bad_expect", 431: "header_too_large",
                501: "bad_encoding", 505: "bad_version", 507: "store_full"}


class Connection(asyncio.Protocol):
    def __init__(self, server: Server):
        self.server = server
        self.store = server.store
        self.stats = server.stats
        self.settings = server.settings
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.state = IDLE
        self.buf = bytearray()
        self.deadline = 0.0
        self.keep_alive = True
        self.eof = False
        self.reading_paused = False
        # upload
        self.body: LengthBody | ChunkedBody | None = None
        self.upload: Resource | None = None
        # reader
        self.res: Resource | None = None
        self.idx = 0
        self.raw = False  # HTTP/1.0 reader: body not chunk-framed, delimited by close
        self.paused = False
        self.paused_at = 0.0
        # long-poll
        self.wait_key: str | None = None
        self.wait_req: Request | None = None
        self.poll_timer: asyncio.TimerHandle | None = None

    # --- asyncio callbacks -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not self.server.admit(self):
            self.stats.drops["connection_cap"] += 1
            self.state = CLOSED
            transport.write(response_head(503, [("Content-Length", "0"), ("Connection", "close")]))  # type: ignore[attr-defined]
            transport.close()
            return
        high = self.settings.reader_buffer_bytes
        self.transport.set_write_buffer_limits(high=high, low=high // 4)
        self.deadline = time.monotonic() + self.settings.header_timeout_s

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = CLOSED
        self.server.forget(self)
        if self.upload is not None:
            self.store.fail(self.upload)
            self.upload = None
        if self.res is not None:
            self.res.readers.discard(self)
            self.res = None
        self._cancel_wait()

    def data_received(self, data: bytes) -> None:
        if self.state == BODY:
            self.deadline = time.monotonic() + self.settings.upload_idle_timeout_s
            rest = self._feed_body(data)
            if not rest:
                return
            data = rest
        if self.state == CLOSED:
            return
        if self.state == IDLE and not self.buf:
            self.deadline = time.monotonic() + self.settings.header_timeout_s
        self.buf += data
        if self.state == IDLE:
            self._next_request()
        elif len(self.buf) > self.settings.max_header_bytes and not self.reading_paused:
            self.reading_paused = True  # pipelined bytes pile up behind a long response
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        self.keep_alive = False
        if self.state == BODY:
            return False  # connection_lost follows and fails the upload
        return self.state == BUSY  # finish the response on the half-closed connection

    def pause_writing(self) -> None:
        self.paused = True
        self.paused_at = time.monotonic()

    def resume_writing(self) -> None:
        self.paused = False
        self.pump()

    # --- request dispatch --------------------------------------------------------------------
    def _next_request(self) -> None:
        limit = self.settings.max_header_bytes
        while self.state == IDLE and self.buf:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0 or end + 4 > limit:
                if len(self.buf) > limit or end >= 0:
                    self._reject(HttpError(431, "request head too large"))
                return
            head = bytes(self.buf[:end]).lstrip(CRLF)
            del self.buf[:end + 4]
            if not head:
                continue
            try:
                self._dispatch(parse_head(head, self.settings.max_headers))
            except HttpError as exc:
                self._reject(exc)
                return
            if self.state == BODY and self.buf:
                rest = bytes(self.buf)
                self.buf.clear()
                self.buf += self._feed_body(rest) or b""

    def _dispatch(self, req: Request) -> None:
        self.stats.requests += 1
        self.keep_alive = req.keep_alive and req.version == "HTTP/1.1" and not self.eof
        path = req.target.partition("?")[0]
        if path in ("/healthz", "/stats"):
            if req.method not in ("GET", "HEAD") or req.has_body:
                raise HttpError(405, "read-only endpoint")
            body = json.dumps(self.server.health() if path == "/healthz" else self.server.snapshot())
            self._send(200, body.encode(), ctype="application/json", head_only=req.method == "HEAD")
            return
        key, status = self.server.authorize(req)
        if status:
            raise HttpError(status, "missing token" if status == 401 else "invalid token")
        if req.method in ("PUT", "POST"):
            self._start_upload(req, key)
        elif req.has_body:
            raise HttpError(400, f"unexpected body on {req.method}")
        elif req.method == "GET":
            self._start_get(req, key)
        elif req.method == "HEAD":
            self._head(key)
        elif self.store.delete(key):
            self._send(200)
        else:
            self._not_found()

    # --- responses -----------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", ctype: str = "text/plain",
              head_only: bool = False, close: bool = False, extra: tuple = ()) -> None:
        close = close or not self.keep_alive
        headers = [("Content-Length", str(len(body)))]
        if body:
            headers.append(("Content-Type", ctype))
        if close:
            headers.append(("Connection", "close"))
        headers.extend(extra)
        self.transport.write(response_head(status, headers) + (b"" if head_only else body))
        self._request_done(close)

    def _request_done(self, close: bool) -> None:
        if close or self.state == CLOSED:
            self.state = CLOSED
            self.transport.close()
            return
        self.state = IDLE
        self.deadline = time.monotonic() + self.settings.keepalive_timeout_s
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()

    def _reject(self, exc: HttpError) -> None:
        """Answer an error and close: after a bad request the byte stream cannot be trusted."""
        self.stats.drops[_DROP_REASON.get(exc.status, str(exc.status))] += 1
        log.debug("%s: %s", exc.status, exc.detail)
        extra = (("WWW-Authenticate", "Bearer"),) if exc.status == 401 else ()
        if exc.status == 405:
            extra = (("Allow", "GET, HEAD, PUT, POST, DELETE"),)
        self._send(exc.status, exc.detail.encode() + CRLF, close=True, extra=extra)

    def _not_found(self, head_only: bool = False) -> None:
        self.stats.not_found += 1
        self._send(404, b"" if head_only else b"not found\r\n", head_only=head_only)

    # --- uploads -------------------------------------------------------------------------------
    def _start_upload(self, req: Request, key: str) -> None:
        if (req.content_length or 0) > self.settings.max_resource_bytes:
            raise HttpError(413, "resource larger than max_resource_bytes")
        expect = req.headers.get("expect")
        if expect is not None and expect.lower() != "100-continue":
            raise HttpError(417, "only 100-continue is supported")
        res = self.store.create(key, req.headers.get("content-type", "application/octet-stream")[:256])
        if res is None:
            raise HttpError(507, "store full of unfinished uploads")
        if not req.has_body:
            self.store.complete(res)
            self._send(200)
            return
        if expect is not None and req.version == "HTTP/1.1":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.upload = res
        self.body = ChunkedBody(self.settings.max_header_bytes) if req.chunked \
            else LengthBody(req.content_length or 0)
        self.state = BODY
        self.deadline = time.monotonic() + self.settings.upload_idle_timeout_s

    def _feed_body(self, data: bytes) -> bytes | None:
        """Store body bytes as they arrive; return what follows the body once it is complete."""
        res = self.upload
        assert res is not None and self.body is not None
        try:
            pieces, rest = self.body.feed(data)
        except HttpError as exc:
            self._abort_upload(exc)
            return None
        for piece in pieces:
            status = self.store.append(res, piece)
            if status:
                self._abort_upload(HttpError(status, "upload exceeds a storage limit"))
                return None
        if rest is None:
            return None
        self.upload = self.body = None
        if self.store.complete(res):
            self._send(200)
        else:
            self._send(409, b"resource was replaced or deleted during the upload\r\n")
        return rest

    def _abort_upload(self, exc: HttpError) -> None:
        if self.upload is not None:
            self.store.fail(self.upload)
            self.upload = self.body = None
        self._reject(exc)

    # --- readers -------------------------------------------------------------------------------
    def _head(self, key: str) -> None:
        res = self.store.get(key)
        if res is None:
            self._not_found(head_only=True)
            return
        length = ("Content-Length", str(res.size)) if res.complete else ("Transfer-Encoding", "chunked")
        headers = [("Content-Type", res.content_type), length]
        if not self.keep_alive:
            headers.append(("Connection", "close"))
        self.transport.write(response_head(200, headers))
        self._request_done(not self.keep_alive)

    def _start_get(self, req: Request, key: str) -> None:
        res = self.store.get(key)
        if res is not None:
            self._stream(res, req)
        elif self.settings.long_poll_ms <= 0:
            self._not_found()
        else:
            self.state = BUSY
            self.wait_key, self.wait_req = key, req
            self.store.wait(key, self)
            loop = asyncio.get_running_loop()
            self.poll_timer = loop.call_later(self.settings.long_poll_ms / 1000, self._poll_expired)

    def created(self, res: Resource) -> None:
        """The long-polled resource appeared: start streaming it right away."""
        req = self.wait_req
        self._cancel_wait()
        if self.state == BUSY and req is not None:
            self._stream(res, req)

    def _poll_expired(self) -> None:
        self.poll_timer = None
        self._cancel_wait()
        if self.state == BUSY:
            self._not_found()
            self._more_requests()

    def _cancel_wait(self) -> None:
        if self.wait_key is not None:
            self.store.unwait(self.wait_key, self)
            self.wait_key = self.wait_req = None
        if self.poll_timer is not None:
            self.poll_timer.cancel()
            self.poll_timer = None

    def _stream(self, res: Resource, req: Request) -> None:
        self.raw = req.version == "HTTP/1.0"
        headers = [("Content-Type", res.content_type), ("Cache-Control", "no-cache")]
        if not self.raw:
            headers.append(("Transfer-Encoding", "chunked"))
            if not self.keep_alive:
                headers.append(("Connection", "close"))
        elif res.complete:
            headers += [("Content-Length", str(res.size)), ("Connection", "close")]
        else:
            headers.append(("Connection", "close"))  # close-delimited; an abort is sent as a reset
        self.transport.write(response_head(200, headers))
        self.state = BUSY
        self.res, self.idx = res, 0
        res.readers.add(self)
        self.pump()

    def pump(self) -> None:
        """Write every chunk not yet sent, in batches, until the socket buffer pushes back."""
        res = self.res
        if res is None or self.paused:
            return
        chunks, batch = res.chunks, self.settings.reader_buffer_bytes
        while self.idx < len(chunks) and not self.paused:
            i, end, size, parts = self.idx, len(chunks), 0, []
            while i < end and size < batch:
                chunk = chunks[i]
                i += 1
                size += len(chunk)
                if self.raw:
                    parts.append(chunk)
                else:
                    parts += (b"%x\r\n" % len(chunk), chunk, CRLF)
            self.stats.bytes_out += size
            self.stats.chunks_out += i - self.idx
            self.idx = i
            self.transport.writelines(parts)
        if res.complete and self.idx == len(chunks) and self.state == BUSY:
            res.readers.discard(self)
            self.res = None
            if self.raw:
                self._request_done(close=True)
                return
            self.transport.write(LAST_CHUNK)
            self._request_done(not self.keep_alive)
            self._more_requests()

    def abort(self) -> None:
        """The resource failed or was removed: end the transfer without its last chunk."""
        self.res = None
        self.stats.drops["reader_aborted"] += 1
        if self.raw:  # without chunk framing only a reset tells the client the body is incomplete
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.state = CLOSED
        self.transport.abort()

    def _more_requests(self) -> None:
        # Pipelined requests wait for the next loop turn: this may run inside another
        # connection's callback, which must not re-enter the store.
        if self.state == IDLE and self.buf:
            asyncio.get_running_loop().call_soon(self._next_request)

    # --- housekeeping --------------------------------------------------------------------------
    def check(self, now: float) -> None:
        """Called a few times a second by the server: enforce timeouts."""
        if self.state == IDLE and now > self.deadline:
            if self.buf:
                self._reject(HttpError(408, "request head not received in time"))
            else:
                self.state = CLOSED
                self.transport.close()
        elif self.state == BODY and now > self.deadline:
            self.stats.drops["upload_timeout"] += 1
            if self.upload is not None:
                self.store.fail(self.upload)
                self.upload = None
            self.state = CLOSED
            self.transport.abort()
        elif self.res is not None and self.paused \
                and now - self.paused_at > self.settings.reader_stall_timeout_s:
            self.stats.drops["reader_stalled"] += 1
            self.res.readers.discard(self)
            self.res = None
            self.state = CLOSED
            self.transport.abort()

    def close(self) -> None:
        self.state = CLOSED
        self.transport.abort()
