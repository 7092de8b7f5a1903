"""Messaging benchmark: probe round trips and data latency of the orchestrator under N streaming
clients, each row against a bare relay measured in the same run.

    python bench/messaging.py --table              # the published table → bench/results/messaging.md
    python bench/messaging.py --clients 200 --duration 10
    python bench/messaging.py --server-url http://host:8090 --clients 500   # a server already running
    python bench/messaging.py --from-json bench/out/messaging.json --out table.md   # render again
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import signal
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.loadgen.generator import LoadSpec, raise_fd_limit
from bench.loadgen.report import document, render
from bench.loadgen.servers import REPO, source_state
from bench.loadgen.table import Plan, main_argv, now, run

TABLE_ROWS = [100, 500, 1000, 2000, 4000]
TABLE_IDLE = 5000
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "messaging.md"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = p.add_argument
    add("--table", action="store_true", help=f"N={TABLE_ROWS} and {TABLE_IDLE} idle, into {DEFAULT_OUT.name}")
    add("--clients", help="comma-separated N of the loaded rows (default: the table's, or 100)")
    add("--idle", type=int, help=f"idle clients row, 0 = none (default {TABLE_IDLE} with --table, else 0)")
    add("--duration", type=float, default=30.0, help="sending seconds per row (default 30)")
    add("--warmup", type=float, default=2.0, help="first seconds not timed (default 2)")
    add("--drain", type=float, default=5.0, help="seconds to wait for in-flight frames (default 5)")
    add("--payload", type=int, default=50 * 1024, help="SendData bytes (default 51200)")
    add("--rate", type=float, default=1.0, help="SendData per second per client (default 1)")
    add("--session-size", type=int, default=2, help="clients per session, all registered to all (default 2)")
    add("--processes", type=int, default=0, help="generator processes (default one per 2000 clients)")
    add("--ramp", type=int, default=32, help="sessions set up concurrently (default 32)")
    add("--probe-interval", type=float, default=0.1, help="seconds between probe operations (default 0.1)")
    add("--repeat", type=int, default=1, help="runs per row; the table shows the median by p99 (default 1)")
    add("--server-url", help="measure this running orchestrator instead of starting one")
    add("--server-pid", type=int, help="its pid, for CPU and RSS figures")
    add("--server-cmd", help="command to start instead of `orchestrator serve`, with {host} and {port}")
    add("--no-baseline", action="store_true", help="skip the bare relay rows")
    add("--relay-direct", action="store_true",
        help="baseline: the relay with the orchestrator's transport shortcuts (bare_relay --direct)")
    add("--pin", action="store_true", help="pin the server to one CPU and the generator to the others")
    add("--profile", action="store_true", help="sample the server with py-spy if it is installed")
    add("--host", default="127.0.0.1", help="where started servers listen (default 127.0.0.1)")
    add("--out", type=Path, help="Markdown file (default results/messaging.md with --table, else stdout)")
    add("--json", type=Path, help="also write every figure of every run as JSON here")
    add("--from-json", type=Path, help="render a saved --json file instead of measuring")
    add("--log-dir", type=Path, default=REPO / "bench" / "out", help="server output (default bench/out)")
    args = p.parse_args(argv)
    if min(args.session_size, args.repeat) < 1 or args.payload < 16 or args.rate < 0 or args.duration <= 0:
        p.error("need --session-size and --repeat >= 1, --payload >= 16 (the frame header), --rate >= 0, "
                "--duration > 0")
    return args


def plan_of(args: argparse.Namespace) -> Plan:
    rows = [int(n) for n in args.clients.split(",") if int(n) > 0] if args.clients else None
    template = LoadSpec(url="", clients=0, session_size=args.session_size, payload=args.payload,
                        rate=args.rate, duration=args.duration, warmup=args.warmup, drain=args.drain,
                        ramp=args.ramp)
    return Plan(rows=rows if rows is not None else TABLE_ROWS if args.table else [100],
                idle=args.idle if args.idle is not None else TABLE_IDLE if args.table else 0,
                template=template, host=args.host, server_url=args.server_url, server_pid=args.server_pid,
                server_cmd=args.server_cmd, baseline=not args.no_baseline, relay_direct=args.relay_direct,
                pin=args.pin,
                processes=args.processes, probe_interval=args.probe_interval, repeat=args.repeat,
                profile=args.profile, log_dir=args.log_dir)


async def cancellable(work):
    """SIGTERM/SIGINT cancel the run, so every server and generator process is stopped on the way out."""
    task, loop = asyncio.current_task(), asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    return await work


def measure(args: argparse.Namespace) -> dict | None:
    raise_fd_limit()
    plan, started, code = plan_of(args), now(), source_state()
    try:
        rows = asyncio.run(cancellable(run(plan, lambda line: print(line, file=sys.stderr, flush=True))))
    except asyncio.CancelledError:
        return None
    code_after = source_state()
    settings = {"load": asdict(plan.template), "repeat": plan.repeat, "pin": plan.pin,
                "probe_interval": plan.probe_interval, "relay": "direct" if plan.relay_direct else "asgi"}
    doc = document(rows, settings, shlex.join(["python", *main_argv()]), started)
    doc["code"] = code if code == code_after else f"CHANGED during the run: from {code} to {code_after}"
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1, default=str))
    return doc


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    doc = json.loads(args.from_json.read_text()) if args.from_json else measure(args)
    if doc is None:
        print("interrupted; servers and generators stopped", file=sys.stderr)
        return 130
    out = args.out or (DEFAULT_OUT if args.table else None)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render(doc))
        print(f"wrote {out}", file=sys.stderr)
    else:
        print(render(doc))
    failed = [f"{r['target']} N={r['clients']}: {r['errors']}" for r in doc["rows"] if r["error_count"]]
    if failed:
        print("rows with errors (connections refused or closed, failed commands):", *failed, sep="\n  ",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
