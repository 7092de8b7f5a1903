"""One benchmark peer process: sends stamped point-cloud frames at a rate, measures what arrives.

Modes: ``webrtc`` (the aiortc test peer through the SFU) and ``udp`` (plain UDP through the
baseline forwarder, same packet sizes and headers). Prints ``READY``, waits for ``GO`` on stdin,
sends for ``--duration`` seconds, drains briefly and prints one JSON result line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from workers.webrtc import internals, packet
from workers.webrtc.testpeer import TestPeer


class UdpPeer(asyncio.DatagramProtocol):
    """Plain-UDP twin of the test peer: same headers and payloads, no ICE/DTLS/SRTP."""

    def __init__(self, client_id: int, target: tuple[str, int]) -> None:
        self.client_id = client_id
        self.target = target
        self.transport: asyncio.DatagramTransport | None = None
        self.packets = self.bytes = 0
        self.latencies_ns: list[int] = []
        self.header_lengths: Counter[int] = Counter()
        self.seq = random.randrange(0, 32768)
        self.ssrc = random.getrandbits(32)
        self.frame_nr = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.packets += 1
        self.bytes += len(data)
        hlen = packet.header_length(data)
        self.header_lengths[hlen] += 1
        if len(data) >= hlen + 36:
            self.latencies_ns.append(
                time.monotonic_ns() - int.from_bytes(data[hlen + 28 : hlen + 36], "little")
            )

    def send_video_frame(self, tile: int, quality: int, data: bytes, stamp: bool = True) -> int:
        assert self.transport is not None
        payloads = packet.video_fragments(self.client_id, self.frame_nr, tile, quality, data)
        ts = (self.frame_nr * 3000) & 0xFFFFFFFF
        self.frame_nr += 1
        for i, payload in enumerate(payloads):
            self.seq = (self.seq + 1) & 0xFFFF
            mpt = packet.PT_VIDEO | (0x80 if i == len(payloads) - 1 else 0)
            hdr = packet.build_header(mpt, self.seq, ts, self.ssrc, 0x31, self.seq)
            payload = payload[:28] + time.monotonic_ns().to_bytes(8, "little") + payload[36:]
            self.transport.sendto(hdr + payload, self.target)
        return len(payloads)


async def run(args: argparse.Namespace) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    if args.mode == "webrtc":
        internals.register_media()
        internals.set_host_addresses(["127.0.0.1"])
        peer: TestPeer | UdpPeer = await TestPeer.connect(args.url, args.client_id, 1, 1, collect=False)
        await peer.wait_connected(15)  # type: ignore[union-attr]
    else:
        host, port = args.target.rsplit(":", 1)
        _, peer = await loop.create_datagram_endpoint(
            lambda: UdpPeer(args.client_id, (host, int(port))), local_addr=("127.0.0.1", 0)
        )
        peer.transport.get_extra_info("socket").setsockopt(1, 8, 4 * 2**20)  # SOL_SOCKET, SO_RCVBUF
        peer.send_video_frame(0, 0, b"hello")  # let the forwarder learn our address
    print("READY", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    frame = bytes(args.frame_bytes)
    interval = args.frame_bytes * 8 / (args.rate_mbps * 1e6)
    sent = 0
    start = loop.time()
    next_at = start + interval * args.phase  # clients are not phase-locked: spread their bursts
    await asyncio.sleep(interval * args.phase)
    cpu0 = time.process_time()
    while loop.time() - start < args.duration:
        sent += peer.send_video_frame(0, 0, frame, stamp=True)
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - loop.time()))
    received_before_drain = peer.packets
    await asyncio.sleep(args.drain)
    cpu = time.process_time() - cpu0
    lat = sorted(peer.latencies_ns)
    result = {
        "client": args.client_id,
        "sent": sent,
        "received": peer.packets,
        "bytes": peer.bytes,
        "received_in_window": received_before_drain,
        "cpu_s": round(cpu, 3),
        "header_lengths": dict(peer.header_lengths),
        "latencies_ms": _percentiles(lat),
    }
    if isinstance(peer, TestPeer):
        await peer.close()
    return result


def _percentiles(sorted_ns: list[int]) -> dict[str, float]:
    if not sorted_ns:
        return {}
    pick = lambda q: sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1e6  # noqa: E731
    return {
        "p50": round(pick(0.50), 3),
        "p90": round(pick(0.90), 3),
        "p99": round(pick(0.99), 3),
        "max": round(sorted_ns[-1] / 1e6, 3),
        "n": len(sorted_ns),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["webrtc", "udp"], required=True)
    p.add_argument("--url", help="SFU base URL (webrtc)")
    p.add_argument("--target", help="forwarder host:port for this peer (udp)")
    p.add_argument("--client-id", type=int, required=True)
    p.add_argument("--rate-mbps", type=float, default=25.0)
    p.add_argument("--frame-bytes", type=int, default=100_000)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--drain", type=float, default=0.5)
    p.add_argument("--phase", type=float, default=0.0, help="start offset, in frame intervals")
    args = p.parse_args()
    import uvloop

    result = uvloop.run(run(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
