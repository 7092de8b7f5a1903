"""A bad sender is closed, logged once, and nothing partial or malformed reaches anyone."""

from __future__ import annotations

import pytest

from workers.tcp.framing import HEADER_SIZE, build_header

MAX = 1_000_000


def raw(body: str, end: bytes = b"\n") -> bytes:
    return body.encode("latin-1").ljust(HEADER_SIZE - 1, b"0") + end


BAD_HEADERS = {
    "non_ascii": (raw("2,alice/aüdio/0,1,10,"), "malformed_header"),
    "control_char": (raw("2,alice/\taudio/0,1,10,"), "malformed_header"),
    "newline_early": (raw("2,alice/audio/0,1,10,\n"), "malformed_header"),
    "four_fields": (raw("2,alice/audio/0,1,10"), "malformed_header"),
    "six_fields": (raw("2,alice/audio/0,1,10,0,"), "malformed_header"),
    "version_3": (raw("3,alice/audio/0,1,10,"), "malformed_header"),
    "version_1": (raw("1,alice/audio/0,1,10,"), "malformed_header"),
    "empty_stream": (raw("2,,1,10,"), "malformed_header"),
    "length_not_decimal": (raw("2,alice/audio/0,1,1O,"), "malformed_header"),
    "length_negative": (raw("2,alice/audio/0,1,-10,"), "malformed_header"),
    "length_hex": (raw("2,alice/audio/0,1,0x10,"), "malformed_header"),
    "timestamp_not_decimal": (raw("2,alice/audio/0,1.5,10,"), "malformed_header"),
    "padding_not_zero": (raw("2,alice/audio/0,1,10,") [:-2] + b"1\n", "malformed_header"),
    "no_newline_at_127": (raw("2,alice/audio/0,1,10,", end=b"0"), "malformed_header"),
    "over_limit": (raw(f"2,alice/pointcloud/0,1,{MAX + 1},"), "too_large"),
    "claims_10_pow_20": (raw(f"2,alice/pointcloud/0,1,{10**20},"), "too_large"),
}


@pytest.fixture(scope="module")
def worker(spawn_shared):
    return spawn_shared({"max_frame_bytes": MAX})


async def assert_nothing_more(receiver, witness) -> None:
    """The receiver's next frame is the witness's marker: nothing else was forwarded before it."""
    await witness.send("witness/audio/0", b"marker")
    assert await receiver.recv_payload() == b"marker"


@pytest.mark.parametrize("case", BAD_HEADERS)
async def test_bad_header_closes_sender(worker, connect, case: str) -> None:
    header, reason = BAD_HEADERS[case]
    before = (await worker.astats())["closed"][reason]
    sender, receiver, witness = await connect.session(worker, 3)
    await sender.send("alice/audio/0", b"valid")
    assert await receiver.recv_payload() == b"valid"
    await sender.send_raw(header + b"p" * 10)
    assert await sender.closed_by_peer() == b""
    await assert_nothing_more(receiver, witness)
    await worker.until(lambda s: s["closed"][reason] == before + 1)
    host, port = sender.writer.get_extra_info("sockname")
    lines = [line for line in worker.log().splitlines() if f"{host}:{port} closed" in line]
    assert len(lines) == 1 and f"closed: {reason}: " in lines[0], lines


@pytest.mark.parametrize("cut", [10, HEADER_SIZE + 500])
async def test_disconnect_mid_frame_forwards_nothing(worker, connect, cut: int) -> None:
    before = (await worker.astats())["closed"]["truncated"]
    sender, receiver, witness = await connect.session(worker, 3)
    frame = build_header("alice/pointcloud/0", 7, 1000) + b"x" * 1000
    await sender.send_raw(frame[:cut])
    sender.close()
    await worker.until(lambda s: s["closed"]["truncated"] == before + 1)
    await assert_nothing_more(receiver, witness)
    await witness.send("witness/audio/0", b"others unaffected")
    await receiver.send("receiver/audio/0", b"both ways")
    assert await receiver.recv_payload() == b"others unaffected"
    assert await witness.recv_payload() == b"both ways"


async def test_huge_claims_cost_no_memory(spawn, connect) -> None:
    worker = spawn()  # default limit: 64 MiB payloads are legal
    baseline = worker.rss()
    sender, _receiver = await connect.session(worker, 2)
    await sender.send_raw(raw(f"2,alice/pointcloud/0,1,{10**20},") + b"x" * 1000)
    assert await sender.closed_by_peer() == b""
    # A legal 64 MiB claim followed by a trickle: memory follows the bytes received, not the claim.
    trickler = (await connect.session(worker, 1))[0]
    await trickler.send_raw(build_header("alice/pointcloud/0", 1, 64 * 2**20) + b"x" * 4096)
    stats = await worker.until(lambda s: any(c["partial_bytes"] == 128 + 4096 for c in s["clients"]))
    grown = worker.rss() - baseline
    assert grown < 8 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB"
    assert stats["closed"]["too_large"] == 1 and stats["frames_in"] == 0
    trickler.close()
    await worker.until(lambda s: s["connections"] == 1 and s["closed"]["truncated"] == 1)
    assert (await worker.astats())["frames_out"] == 0  # the receiver got nothing partial
