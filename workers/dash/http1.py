"""Minimal, strict HTTP/1.1 request parsing: the request head and the two body framings.

Hand-written so that every limit (head size, header count, chunk-size line length) is ours and
so that body bytes can be handed on the moment they arrive, which a full framework hides.
Ambiguous framing (Content-Length with chunked, differing lengths) is refused: it is how request
smuggling starts, and no legitimate client sends it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE"})
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_DIGITS = re.compile(rb"[0-9]{1,18}")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")
MAX_LINE = 4096  # chunk-size and trailer lines

REASONS = {
    100: "Continue", 200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict",
    411: "Length Required", 413: "Content Too Large", 417: "Expectation Failed",
    431: "Request Header Fields Too Large", 501: "Not Implemented", 503: "Service Unavailable",
    505: "HTTP Version Not Supported", 507: "Insufficient Storage",
}


class HttpError(Exception):
    """A request we answer with `status` and then close the connection."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class Request:
    method: str
    target: str  # path plus query string, exactly as sent (absolute-form reduced to it)
    version: str  # "HTTP/1.1" or "HTTP/1.0"
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    content_length: int | None = None
    chunked: bool = False

    @property
    def keep_alive(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in conn
        return "close" not in conn

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


def parse_head(head: bytes, max_headers: int) -> Request:
    """Parse a request head (without the final blank line)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1]:
        raise HttpError(400, "malformed request line")
    method, target, version = (p.decode("latin-1") for p in parts)
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(505, f"unsupported version {version[:16]!r}")
    if method not in METHODS:
        raise HttpError(405, f"method {method[:16]} not allowed")
    if target.startswith(("http://", "https://")):
        slash = target.find("/", target.index("//") + 2)
        target = target[slash:] if slash >= 0 else "/"
    if not target.startswith("/") or any(c in target for c in " \x00\r\n\t"):
        raise HttpError(400, "malformed request target")
    if len(lines) - 1 > max_headers:
        raise HttpError(431, "too many header fields")
    headers: dict[str, str] = {}
    lengths: set[bytes] = set()
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):
            raise HttpError(400, "malformed header field")
        value = value.strip(b" \t")
        key = name.decode("latin-1").lower()
        if key == "content-length":
            lengths.update(v.strip() for v in value.split(b","))
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    req = Request(method, target, version, headers)
    te = headers.get("transfer-encoding")
    if te is not None:
        if te.strip().lower() != "chunked":
            raise HttpError(501, "only chunked transfer-encoding is supported")
        if lengths:
            raise HttpError(400, "both content-length and transfer-encoding")
        req.chunked = True
    elif lengths:
        if len(lengths) != 1 or not _DIGITS.fullmatch(next(iter(lengths))):
            raise HttpError(400, "invalid content-length")
        req.content_length = int(next(iter(lengths)))
    return req


class LengthBody:
    """A Content-Length body: passes bytes through until the count is reached."""

    def __init__(self, length: int):
        self.remaining = length

    def feed(self, data: bytes) -> tuple[list[bytes], bytes | None]:
        """Return (payload pieces, leftover after the body or None while the body continues)."""
        n = self.remaining
        if len(data) < n:
            self.remaining -= len(data)
            return ([data] if data else []), None
        self.remaining = 0
        return ([data[:n]] if n else []), data[n:]


class ChunkedBody:
    """An incremental chunked-transfer decoder that yields payload as soon as it arrives."""

    SIZE, DATA, CRLF, TRAILER = range(4)

    def __init__(self, max_trailer_bytes: int):
        self.state = self.SIZE
        self.remaining = 0
        self.crlf_seen = 0
        self.line = bytearray()
        self.trailer_budget = max_trailer_bytes

    def feed(self, data: bytes) -> tuple[list[bytes], bytes | None]:
        out: list[bytes] = []
        pos, end = 0, len(data)
        while pos < end:
            if self.state == self.DATA:
                take = min(self.remaining, end - pos)
                out.append(data[pos:pos + take])
                pos += take
                self.remaining -= take
                if not self.remaining:
                    self.state, self.crlf_seen = self.CRLF, 0
            elif self.state == self.CRLF:
                if data[pos] != b"\r\n"[self.crlf_seen]:
                    raise HttpError(400, "chunk not followed by CRLF")
                pos += 1
                self.crlf_seen += 1
                if self.crlf_seen == 2:
                    self.state = self.SIZE
            else:
                nl = data.find(b"\n", pos)
                limit = MAX_LINE if self.state == self.SIZE else self.trailer_budget
                if nl < 0:
                    self.line += data[pos:]
                    if len(self.line) > limit:
                        raise HttpError(400 if self.state == self.SIZE else 431, "chunk line too long")
                    break
                self.line += data[pos:nl + 1]
                pos = nl + 1
                if len(self.line) > limit or not self.line.endswith(b"\r\n"):
                    raise HttpError(400, "malformed chunk line")
                line = bytes(self.line[:-2])
                self.line.clear()
                if self.state == self.SIZE:
                    size = line.split(b";", 1)[0].strip(b" \t")
                    if not _HEX.fullmatch(size):
                        raise HttpError(400, "malformed chunk size")
                    self.remaining = int(size, 16)
                    self.state = self.DATA if self.remaining else self.TRAILER
                elif not line:
                    return out, data[pos:]
                else:
                    self.trailer_budget -= len(line) + 2
        return out, None


def response_head(status: int, headers: list[tuple[str, str]] | tuple = ()) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
