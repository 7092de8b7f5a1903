"""Baseline forwarder: the SFU's own data plane (forward.Endpoint) over plain UDP sockets.

Same event loop (uvloop), same per-packet parsing, validation, quality logic and 20-byte header
rewrite, one socket per peer -- but no ICE, DTLS, SRTP or aiortc. The difference between this and
the SFU is what the WebRTC stack costs. Prints the peers' ports as JSON, then runs until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from workers.webrtc.forward import Endpoint, Output
from workers.webrtc.udpsend import BatchSender


class PlainLink(asyncio.DatagramProtocol):
    """Stands in for RtpLink: learns the peer's address from its first datagram, same batched
    (GSO) sending, no crypto."""

    srtp_errors = 0
    send_failures = 0
    send_calls = 0

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.transport: asyncio.DatagramTransport | None = None
        self.sender: BatchSender | None = None

    @property
    def sending(self) -> bool:
        return self.sender is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.get_extra_info("socket").setsockopt(1, 8, 4 * 2**20)  # SO_RCVBUF

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        if self.sender is None:
            sock = self.transport.get_extra_info("socket")  # type: ignore[union-attr]
            self.sender = BatchSender(sock.fileno(), addr, gso=True, max_pending=1024, buffer_bytes=4 * 2**20)
            return
        self.endpoint.on_rtp(data)

    def send(self, data: bytes) -> bool:
        return self.sender is not None and self.sender.send(data)

    def close(self) -> None:
        pass


async def main(npeers: int) -> None:
    loop = asyncio.get_running_loop()
    endpoints = [Endpoint(cid, 1, 1, 2**26) for cid in range(1, npeers + 1)]
    ports = []
    for ep in endpoints:
        ep.set_ext_id(3)
        transport, link = await loop.create_datagram_endpoint(
            lambda ep=ep: PlainLink(ep), local_addr=("127.0.0.1", 0)
        )
        ep.link = link  # type: ignore[assignment]
        ports.append(transport.get_extra_info("sockname")[1])
    for src in endpoints:
        src.streams.clear()
        for dst in endpoints:
            if dst is not src:
                out = Output(dst, random.getrandbits(32), f"video_{src.client_id}_0", src.client_id, 0, None)
                out.live = True
                src.tile_outs[0].append(out)
    print(json.dumps(ports), flush=True)
    await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--peers", type=int, required=True)
    import uvloop

    uvloop.run(main(parser.parse_args().peers))
