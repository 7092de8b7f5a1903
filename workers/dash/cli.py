"""Command line and process lifecycle: settings, logging, signals, exit codes (see the worker contract)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from .server import Server
from .settings import Settings, SettingsError, load

log = logging.getLogger("workers.dash")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m workers.dash", description="Low-latency DASH relay.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, required=True, help="TCP port; 0 picks a free one (logged)")
    p.add_argument("--settings", help="YAML or JSON mapping of settings (see workers/dash/README.md)")
    p.add_argument("--log-level", default="INFO", type=str.upper,
                   choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])
    return p


async def _serve(host: str, port: int, settings: Settings, settings_path: str | None) -> int:
    server = Server(settings, settings_path)
    try:
        addresses = await server.start(host, port)
    except OSError as exc:
        print(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr, flush=True)
        return 1
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, server.reload_auth)
    log.info("listening on %s", ", ".join(f"{h}:{p}" if ":" not in h else f"[{h}]:{p}" for h, p in addresses))
    await stop.wait()
    log.info("stopping")
    await server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    if not 0 <= args.port <= 65535:
        print(f"error: --port: {args.port} is not a TCP port", file=sys.stderr)
        return 2
    try:
        settings = load(args.settings)
    except SettingsError as exc:
        print(f"error: settings: {exc}", file=sys.stderr)
        return 2
    coro = _serve(args.host, args.port, settings, args.settings)
    try:
        import uvloop
    except ImportError:  # plain asyncio works, only slower
        return asyncio.run(coro)
    return uvloop.run(coro)
