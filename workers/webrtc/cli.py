"""Command line of the WebRTC SFU worker (see the worker process contract)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from aiohttp import web

from . import internals
from .server import Sfu
from .settings import Settings, SettingsError, load


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m workers.webrtc", description="VR2Gather WebRTC SFU worker")
    p.add_argument("--host", required=True, help="HTTP/WebSocket listen address")
    p.add_argument("--port", required=True, type=int, help="HTTP/WebSocket listen port")
    p.add_argument("--udp-ports", metavar="MIN:MAX", help="UDP port slice for ICE (default: any)")
    p.add_argument("--public-ip", metavar="IP", help="address advertised as an extra ICE candidate")
    p.add_argument("--settings", metavar="FILE", help="YAML or JSON settings mapping")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p.parse_args(argv)


def setup_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=level, format="%(levelname)s %(name)s: %(message)s")
    if level != "DEBUG":  # aiortc/aioice log per connection event at INFO; keep ours readable
        for name in ("aiortc", "aioice"):
            logging.getLogger(name).setLevel(logging.WARNING)


async def serve(settings: Settings, host: str, port: int) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sfu = Sfu(settings)
    runner = web.AppRunner(sfu.make_app(), handle_signals=False, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        print(f"cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    logging.getLogger(__name__).info(
        "listening on http://%s:%d/ (UDP ports %s)", host, port, settings.udp_ports or "any"
    )
    await stop.wait()
    await sfu.shutdown()
    await runner.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load(args.settings, {"udp_ports": args.udp_ports, "public_ip": args.public_ip})
    except SettingsError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    setup_logging(args.log_level)
    try:
        internals.check_internals()
    except RuntimeError as exc:
        print(f"unsupported aiortc/aioice: {exc}", file=sys.stderr)
        return 1
    internals.register_media()
    internals.set_host_addresses(settings.ice_addresses)
    ports = settings.port_range()
    slice_ = internals.PortSlice(*ports) if ports else None
    with asyncio.Runner(loop_factory=internals.loop_factory(slice_, settings.uvloop)) as runner:
        return runner.run(serve(settings, args.host, args.port))
