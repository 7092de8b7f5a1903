"""The reflector's frame header, exactly as the VR2Gather client writes and reads it.

A frame is a 128-byte ASCII header followed by ``length`` payload bytes::

    2,<stream name>,<timestamp ms>,<length>,000…0\\n      (byte 127 is the newline)

The Unity client stops its receive loop for good on a header it cannot parse, so the reflector
must reject anything the client would not have written. These are pure functions so that the
worker, the tests and tools (bench, bots) all agree on what a valid header is.
"""

from __future__ import annotations

import re
from typing import NamedTuple

HEADER_SIZE = 128
VERSION = 2
MAX_LENGTH = 2**31 - 1  # the client reads the length into a C# int
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1



class HeaderError(ValueError):
    """A header the client would not accept; ``reason`` is a stable counter key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class Header(NamedTuple):
    stream: str
    timestamp: int
    length: int


_new_header = tuple.__new__  # builds a Header without NamedTuple's Python-level __new__ (per frame)


def parse_header(raw: bytes | bytearray | memoryview, max_length: int = MAX_LENGTH) -> Header:
    """Validate one 128-byte header and return its fields.

    Raises HeaderError with reason ``malformed_header`` or ``too_large`` (length above
    ``max_length``). Never reads beyond 128 bytes and never allocates by the claimed length.
    """
    # Runs once per frame, so it is a handful of C-level bytes methods; _diagnose() explains failures.
    fields = bytes(raw[:127]).split(b",") if len(raw) == HEADER_SIZE and raw[127] == 0x0A else ()
    if len(fields) == 5:
        version, stream, ts, digits, pad = fields
        name = stream.decode("ascii") if stream.isascii() else ""
        if (version == b"2" and name.isprintable() and name and not pad.lstrip(b"0") and digits.isdigit()
                and (ts.isdigit() or (ts[:1] == b"-" and ts[1:].isdigit()))):
            timestamp = int(ts)
            if not _INT64_MIN <= timestamp <= _INT64_MAX:
                raise HeaderError("malformed_header", "timestamp out of int64 range")
            # Past 12 digits (leading zeros aside) a length exceeds any limit: no huge int parsing.
            length = int(digits) if len(digits) <= 12 or not digits[:-12].strip(b"0") else MAX_LENGTH + 1
            if length > max_length or length > MAX_LENGTH:
                raise HeaderError("too_large", f"length {digits[:24].decode()} exceeds the limit of "
                                  f"{min(max_length, MAX_LENGTH)}")
            return _new_header(Header, (name, timestamp, length))
    raise HeaderError("malformed_header", _diagnose(bytes(raw)))


def _diagnose(raw: bytes) -> str:
    """Say precisely why a header failed, for the one log line a rejected sender gets."""
    if len(raw) != HEADER_SIZE:
        return f"header is {len(raw)} bytes, expected {HEADER_SIZE}"
    for i, b in enumerate(raw[:-1]):
        if not 0x20 <= b <= 0x7E:
            return f"byte {i} is 0x{b:02x}, not printable ASCII"
    if raw[-1] != 0x0A:
        return f"byte 127 is 0x{raw[-1]:02x}, expected '\\n'"
    fields = raw[:-1].split(b",")
    if len(fields) != 5:
        return f"{len(fields)} comma-separated fields, expected 5"
    version, stream, timestamp, length, pad = fields
    if version != b"2":
        return f"version {version[:16]!r}, expected b'2'"
    if not stream:
        return "empty stream name"
    if not re.fullmatch(rb"-?[0-9]+", timestamp):
        return f"timestamp {timestamp[:24]!r} is not a decimal integer"
    if not re.fullmatch(rb"[0-9]+", length):
        return f"length {length[:24]!r} is not a non-negative decimal integer"
    return f"padding {pad[:24]!r} is not all '0'"


def build_header(stream: str, timestamp: int, length: int) -> bytes:
    """The header a well-behaved client sends (tests, bench and bots use this)."""
    head = f"{VERSION},{stream},{timestamp},{length},".encode("ascii")
    header = head + b"0" * (HEADER_SIZE - 1 - len(head)) + b"\n"
    parse_header(header)  # refuse to build what the reflector would reject
    return header
