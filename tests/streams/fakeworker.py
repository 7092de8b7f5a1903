"""A stand-in stream worker for supervisor tests: obeys the worker contract and misbehaves on request.

Serves GET /healthz (and /stats) over HTTP on --control-port if given, else on --port; with a control
port the main port is a plain TCP listener. Flags make it fail in the ways real workers fail.
"""

import argparse
import asyncio
import ctypes
import json
import os
import signal
import subprocess
import sys


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--control-port", type=int)
    ap.add_argument("--settings")
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--udp-ports")
    ap.add_argument("--exit-at-start", type=int, help="exit with this code before listening")
    ap.add_argument("--exit-after", type=float, help="exit with code 3 after this many seconds")
    ap.add_argument("--ignore-sigterm", action="store_true")
    ap.add_argument("--spawn-child", action="store_true", help="start a helper process in the same group")
    ap.add_argument("--clear-pdeathsig", action="store_true", help="survive the supervisor's death")
    ap.add_argument("--unhealthy-after", type=float, help="answer /healthz with 500 after this many seconds")
    ap.add_argument("--log-lines", type=int, default=0, help="print this many lines at start")
    args = ap.parse_args()

    if args.exit_at_start is not None:
        print(f"ERROR fakeworker: told to exit with {args.exit_at_start}", file=sys.stderr, flush=True)
        sys.exit(args.exit_at_start)
    if args.clear_pdeathsig:
        ctypes.CDLL(None).prctl(1, 0, 0, 0, 0)
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.spawn_child:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        print(f"INFO fakeworker: child {child.pid}", file=sys.stderr, flush=True)
    for i in range(args.log_lines):
        print(f"INFO fakeworker: line {i}", flush=True)
    if args.settings:
        with open(args.settings) as f:
            settings = json.load(f)
        print(f"INFO fakeworker: settings {json.dumps(settings)}", file=sys.stderr, flush=True)
    asyncio.run(serve(args))


async def serve(args) -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    if not args.ignore_sigterm:
        loop.add_signal_handler(signal.SIGTERM, done.set)
    started = loop.time()

    async def http(reader, writer):
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            path = request.split(b" ")[1].decode()
            sick = args.unhealthy_after is not None and loop.time() - started > args.unhealthy_after
            status, body = (500, {"status": "sick"}) if sick and path == "/healthz" else (200, {
                "/healthz": {"status": "ok", "pid": os.getpid(), "settings": args.settings},
                "/stats": {"connections": 0}}.get(path, {"path": path}))
            data = json.dumps(body).encode()
            writer.write(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n%s" % (status, len(data), data))
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, IndexError):
            pass
        finally:
            writer.close()

    async def plain(reader, writer):
        writer.close()

    try:
        main_handler = http if args.control_port is None else plain
        servers = [await asyncio.start_server(main_handler, args.host, args.port)]
        if args.control_port is not None:
            servers.append(await asyncio.start_server(http, "127.0.0.1", args.control_port))
    except OSError as e:
        print(f"ERROR fakeworker: cannot listen: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    print(f"INFO fakeworker: listening on {args.port}", file=sys.stderr, flush=True)
    if args.exit_after is not None:
        loop.call_later(args.exit_after, lambda: os._exit(3))
    await done.wait()
    for s in servers:
        s.close()


if __name__ == "__main__":
    main()
