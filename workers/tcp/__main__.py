"""One session's TCP reflector on one port (``python -m workers.tcp``).

Exit codes: 0 after SIGTERM/SIGINT, 1 when it cannot start (port in use, …), 2 for bad settings
or flags. Every error is one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys

from workers.tcp import heap
from workers.tcp.control import start_control
from workers.tcp.reflector import Reflector
from workers.tcp.settings import Settings, SettingsError, flag_specs, load_settings, parse_flag

log = logging.getLogger("workers.tcp")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m workers.tcp", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="0.0.0.0", help="address to serve clients on (default: all)")
    p.add_argument("--port", type=int, required=True, help="client port (one per session)")
    p.add_argument("--control-port", type=int, help="HTTP port for /healthz and /stats (absent: none)")
    p.add_argument("--control-host", default="127.0.0.1", help="address of the control endpoint")
    p.add_argument("--settings", metavar="FILE", help="YAML or JSON mapping of the settings below")
    p.add_argument("--log-level", default="INFO", type=str.upper,
                   choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])
    group = p.add_argument_group("settings (override the file)")
    for key, flag, doc in flag_specs():
        group.add_argument(flag, dest=f"setting:{key}", metavar="VALUE", help=doc)
    return p


async def serve(settings: Settings, args: argparse.Namespace) -> int:
    reflector = Reflector(settings)
    try:
        await reflector.start(args.host, args.port)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {_why(exc)}", file=sys.stderr)
        return 1
    control = None
    if args.control_port is not None:
        routes = {"/healthz": reflector.health, "/stats": reflector.stats}
        try:
            control = await start_control(args.control_host, args.control_port, routes)
        except OSError as exc:
            print(f"error: cannot listen on {args.control_host}:{args.control_port} (control): {_why(exc)}",
                  file=sys.stderr)
            await reflector.stop()
            return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gc.freeze()  # start-up objects never die: keep them out of every later collection's scan
    heap.tune()
    log.info("reflecting on %s:%d, control on %s", args.host, reflector.port,
             f"{args.control_host}:{args.control_port}" if control else "none")
    await stop.wait()
    log.info("stopping")
    if control is not None:
        control.close()
    await reflector.stop()
    return 0


def _why(exc: OSError) -> str:
    """asyncio wraps bind errors in a long message; the errno's own text is the one-line reason."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    try:
        overrides = {key[8:]: parse_flag(key[8:], value) for key, value in vars(args).items()
                     if key.startswith("setting:") and value is not None}
        settings = load_settings(args.settings, overrides)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(serve(settings, args))


if __name__ == "__main__":
    sys.exit(main())
