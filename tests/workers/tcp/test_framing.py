"""Header parser properties (pure function, no process)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.tcp.framing import HEADER_SIZE, MAX_LENGTH, Header, HeaderError, build_header, parse_header

INT64 = st.integers(-(2**63), 2**63 - 1)
STREAM = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, blacklist_characters=","),
                 min_size=1, max_size=60)


def oracle(raw: bytes, max_length: int) -> Header | str:
    """A deliberately naive re-statement of the rules, to cross-check the fast parser."""
    if len(raw) != HEADER_SIZE or raw[-1:] != b"\n" or any(not 0x20 <= b <= 0x7E for b in raw[:-1]):
        return "malformed_header"
    fields = raw[:-1].split(b",")
    if len(fields) != 5:
        return "malformed_header"
    version, stream, ts, length, pad = fields
    if version != b"2" or not stream or pad.strip(b"0") or not re.fullmatch(rb"[0-9]+", length):
        return "malformed_header"
    if not re.fullmatch(rb"-?[0-9]+", ts) or not -(2**63) <= int(ts) < 2**63:
        return "malformed_header"
    if int(length) > min(max_length, MAX_LENGTH):
        return "too_large"
    return Header(stream.decode(), int(ts), int(length))


def outcome(raw: bytes, max_length: int = MAX_LENGTH) -> Header | str:
    try:
        return parse_header(raw, max_length)
    except HeaderError as exc:
        return exc.reason


@given(STREAM, INT64, st.integers(0, MAX_LENGTH))
def test_round_trip(stream: str, timestamp: int, length: int) -> None:
    try:
        header = build_header(stream, timestamp, length)
    except ValueError:  # does not fit in 127 bytes
        assert len(f"2,{stream},{timestamp},{length},") > HEADER_SIZE - 1
        return
    assert len(header) == HEADER_SIZE and header.endswith(b"\n")
    assert parse_header(header) == (stream, timestamp, length)
    assert parse_header(memoryview(bytearray(header))) == (stream, timestamp, length)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_raise_header_error(raw: bytes) -> None:
    assert outcome(raw) == oracle(raw, MAX_LENGTH)


@settings(max_examples=400)
@given(STREAM.filter(lambda s: len(s) < 40), INT64, st.integers(0, 10**6), st.data())
def test_mutations_agree_with_oracle(stream: str, timestamp: int, length: int, data: st.DataObject) -> None:
    raw = bytearray(build_header(stream, timestamp, length))
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, HEADER_SIZE - 1))] = data.draw(st.integers(0, 255))
    max_length = data.draw(st.integers(0, 2 * 10**6))
    assert outcome(bytes(raw), max_length) == oracle(bytes(raw), max_length)


@given(st.integers(0, MAX_LENGTH), st.integers(0, MAX_LENGTH))
def test_length_limit(length: int, limit: int) -> None:
    expected = "too_large" if length > limit else length
    got = outcome(build_header("u/pointcloud/0", 1, length), limit)
    assert (got if isinstance(got, str) else got.length) == expected


def _raw(body: str) -> bytes:
    return body.encode("latin-1").ljust(HEADER_SIZE - 1, b"0") + b"\n"


@pytest.mark.parametrize(("raw", "reason"), [
    (_raw("2,u/audio/0,1,5,"), None),
    (_raw("2,u/audio/0,-1,0,"), None),
    (_raw("2,u/audio/0,1,5,").replace(b"0\n", b"\n\n"), "malformed_header"),
    (_raw("2,u/audio/0,1,5,")[:-1] + b"0", "malformed_header"),
    (_raw("2,u/aüdio/0,1,5,"), "malformed_header"),
    (_raw("2,u/audio/0,1,5"), "malformed_header"),  # 4 fields: padding glued to the length
    (_raw("2,u/audio/0,1,5,,"), "malformed_header"),
    (_raw("2,u,audio/0,1,5,"), "malformed_header"),
    (_raw("3,u/audio/0,1,5,"), "malformed_header"),
    (_raw("02,u/audio/0,1,5,"), "malformed_header"),
    (_raw("2,,1,5,"), "malformed_header"),
    (_raw("2,u/audio/0,x,5,"), "malformed_header"),
    (_raw("2,u/audio/0,1,-5,"), "malformed_header"),
    (_raw("2,u/audio/0,1,+5,"), "malformed_header"),
    (_raw("2,u/audio/0,1, 5,"), "malformed_header"),
    (_raw("2,u/audio/0,1,0x10,"), "malformed_header"),
    (_raw("2,u/audio/0,1,5,00a"), "malformed_header"),
    (_raw("2,u/audio/0,99999999999999999999,5,"), "malformed_header"),  # beyond int64
    (_raw("2,u/audio/0,1,2147483648,"), "too_large"),
    (_raw("2,u/audio/0,1,100000000000000000000,"), "too_large"),
    (_raw("2,u/audio/0,1,5,")[:100], "malformed_header"),
    (_raw("2,u/audio/0,1,5,") + b"x", "malformed_header"),
])
def test_examples(raw: bytes, reason: str | None) -> None:
    got = outcome(raw)
    assert (got if isinstance(got, str) else None) == reason
    if reason:
        with pytest.raises(HeaderError) as info:
            parse_header(raw)
        assert str(info.value)  # the one log line names a cause


def test_leading_zeros_in_length_are_decimal() -> None:
    assert parse_header(_raw("2,s/audio/0,1," + "0" * 30 + "7,")).length == 7
