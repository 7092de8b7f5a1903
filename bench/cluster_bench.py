"""Cluster benchmark: what the cross-process hop costs, against one in-memory process in the same run.

    python bench/cluster_bench.py              # prints the table
    python bench/cluster_bench.py --write      # and writes bench/results/cluster.md

Data: pairs of clients (sender adds a session, receiver joins and registers for its stream), frames
sent at a fixed rate: latency from the frame's due time to its arrival, and the servers' CPU per
delivered frame (orchestrators plus redis-server). Three placements: one in-memory process; a
cluster of two with both members on the same process; a cluster with members on different
processes (the frame crosses Redis pub/sub). Control: clients looping Login+Logout or
JoinSession+LeaveSession as fast as they are answered (each step goes through the cluster log).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import math
import platform
import shlex
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cluster.load import control_rate, data_latency
from bench.cluster.stack import cluster, single
from bench.loadgen.generator import raise_fd_limit
from bench.loadgen.servers import REPO

OUT = REPO / "bench" / "results" / "cluster.md"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=50, help="sender/receiver pairs (default 50)")
    p.add_argument("--payload", type=int, default=16 * 1024, help="SendData bytes (default 16384)")
    p.add_argument("--rate", type=float, default=10.0, help="frames per second per sender (default 10)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of data per placement (default 10)")
    p.add_argument("--connections", type=int, default=50, help="clients of the control runs (default 50)")
    p.add_argument("--control-duration", type=float, default=5.0, help="seconds per control run (default 5)")
    p.add_argument("--write", action="store_true", help=f"write the table to {OUT.relative_to(REPO)}")
    p.add_argument("--log-dir", type=Path, default=REPO / "bench" / "out", help="server output")
    return p.parse_args(argv)


async def run(args: argparse.Namespace) -> dict[str, dict]:
    args.log_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    data = {"payload": args.payload, "rate": args.rate, "duration": args.duration}
    control = {"connections": args.connections, "duration": args.control_duration}

    async def both(prefix: str, urls: list[str], pids: list[int]) -> None:
        for what in ("login", "join"):
            results[f"{prefix} {what}"] = await control_rate(http, urls, pids, what=what, **control)

    async with aiohttp.ClientSession() as http:
        async with single(args.log_dir) as stack:
            url = stack.urls[0]
            results["single"] = await data_latency(http, [(url, url)] * args.pairs, stack.pids, **data)
            await both("single", stack.urls, stack.pids)
        async with cluster(args.log_dir) as stack:
            a, b = stack.urls
            same = [(a, a) if i % 2 else (b, b) for i in range(args.pairs)]
            across = [(a, b) if i % 2 else (b, a) for i in range(args.pairs)]
            results["same"] = await data_latency(http, same, stack.pids, **data)
            results["across"] = await data_latency(http, across, stack.pids, **data)
            await both("cluster", stack.urls, stack.pids)
    return results


def ratio(x: float, base: float) -> str:
    return f"{x / base:.2f}x" if base and not math.isnan(x) and not math.isnan(base) else "n/a"


def render(r: dict[str, dict], args: argparse.Namespace, command: str, seconds: float) -> str:
    s, m, x = r["single"], r["same"], r["across"]
    rows = [
        *((f"data frame latency {q}", *(f"{v[f'{q}_ms']:.2f} ms" for v in (s, m, x)),
           ratio(x[f"{q}_ms"], s[f"{q}_ms"])) for q in ("p50", "p99")),
        ("server CPU per delivered frame", *(f"{v['cpu_ms_per_frame']:.3f} ms" for v in (s, m, x)),
         ratio(x["cpu_ms_per_frame"], s["cpu_ms_per_frame"])),
        ("frames received / sent", *(f"{v['received']} / {v['sent']}" for v in (s, m, x)), ""),
    ]
    for kind, label in (("login", "Login+Logout"), ("join", "JoinSession+LeaveSession")):
        one, many = r[f"single {kind}"], r[f"cluster {kind}"]
        rows.append((f"{label} cycles per second ({args.connections} clients)", f"{one['per_s']:.0f}", "",
                     f"{many['per_s']:.0f} (clients on both)", ratio(many["per_s"], one["per_s"])))
        rows.append((f"server CPU per {label} cycle", f"{one['cpu_ms_per_op']:.2f} ms", "",
                     f"{many['cpu_ms_per_op']:.2f} ms", ratio(many["cpu_ms_per_op"], one["cpu_ms_per_op"])))
    table = ["| measurement | single process (memory) | cluster, members on one process | "
             "cluster, members on two processes | two processes / single |", "|---|---|---|---|---|"]
    table += ["| " + " | ".join(row) + " |" for row in rows]
    date = datetime.date.today().isoformat()
    return "\n".join([
        "## Cluster mode (`--state redis://...`) against one in-memory process",
        "",
        f"Command: `{command}` ({date}, {seconds:.0f} s, Python {platform.python_version()}, loopback, "
        "one redis-server 7 without persistence, the load generator on the same 2 shared CPUs).",
        "",
        *table,
        "",
        f"Data: {args.pairs} pairs, each sender {args.rate:g} frames/s of {args.payload} bytes for "
        f"{args.duration:g} s; latency from each frame's due time (CLOCK_MONOTONIC, shared by the "
        "processes of one machine) to its arrival at the receiver, first second not counted. Server "
        "CPU is that of every orchestrator process plus redis-server over the run, divided by the frames "
        "delivered. In the cluster, a frame to a member on another process is routed by the sender's "
        "process from its replica and crosses Redis pub/sub once per destination process; control "
        "operations go through the shared log (XADD, then every process applies them in order) and are "
        "acknowledged once the client's own process has applied them. Control rows: each client loops "
        "one step after the other as fast as the acks come, for "
        f"{args.control_duration:g} s; a cycle is two state changes. Absolute numbers swing with the "
        "load of this shared machine; the ratios within one run are the comparable figures.",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    raise_fd_limit()
    started = time.monotonic()
    results = asyncio.run(run(args))
    command = "python bench/cluster_bench.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    markdown = render(results, args, command.strip(), time.monotonic() - started)
    print(markdown)
    if args.write:
        OUT.write_text(markdown)
        print(f"wrote {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
