"""The whole table: for each N, the bare relay then the orchestrator, each in a fresh process,
then the idle-connections row; rendered as Markdown with ratios against the relay."""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import platform
import shlex
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path

from .generator import LoadSpec
from .row import measure
from .servers import REPO, Server, free_port, orchestrator_argv, relay_argv, started

RELAY, ORCHESTRATOR = "bare relay", "orchestrator"
NODE_REFERENCE = """\
Reference, not measured here: the Node.js orchestrator v2.7.4 publishes a probe round trip of
avg 5.25 / max 12 ms at 100 clients, 7 / 19 at 500, 8.95 / 23 at 1000 (0 dropped) and 36 / 118 at
2000 (167 of 240,543 packets dropped); on a 2-core machine with this kind of load on the same
machine it shows a data latency p99 of about 60 ms at 2000 clients and about 630 ms at 4000."""


@dataclass
class Plan:
    rows: list[int]
    idle: int
    template: LoadSpec
    host: str = "127.0.0.1"
    server_url: str | None = None
    server_pid: int | None = None
    server_cmd: str | None = None
    baseline: bool = True
    pin: bool = False
    processes: int = 0  # 0 = one generator process per 2000 clients, at most nproc
    probe_interval: float = 0.1
    log_dir: Path = REPO / "bench" / "out"


def generator_processes(plan: Plan, clients: int) -> int:
    if plan.processes:
        return plan.processes
    return max(1, min(os.cpu_count() or 1, math.ceil(clients / 2000)))


def cpu_split(plan: Plan) -> tuple[list[int] | None, list[int] | None]:
    """With --pin: the server gets the first CPU, generators and probe the others."""
    cpus = sorted(os.sched_getaffinity(0))
    if not plan.pin or len(cpus) < 2:
        return None, None
    return cpus[:1], cpus[1:]


@contextlib.asynccontextmanager
async def server(plan: Plan, target: str, clients: int) -> AsyncIterator[Server]:
    if target == ORCHESTRATOR and plan.server_url:
        yield Server(target, plan.server_url, plan.server_pid)
        return
    port = free_port(plan.host)
    argv = (
        relay_argv(plan.host, port)
        if target == RELAY
        else orchestrator_argv(plan.host, port, plan.server_cmd)
    )
    log = plan.log_dir / f"{'relay' if target == RELAY else 'orchestrator'}-{clients}.log"
    async with started(target, argv, f"http://{plan.host}:{port}", log, cpu_split(plan)[0]) as running:
        yield running


async def run(plan: Plan, progress: Callable[[str], None]) -> list[dict]:
    """Every row, one server process at a time; the relay first so each pair is adjacent in time."""
    generator_cpus = cpu_split(plan)[1]
    if generator_cpus:
        os.sched_setaffinity(0, generator_cpus)
    loads = [(n, plan.template.rate) for n in plan.rows] + ([(plan.idle, 0.0)] if plan.idle else [])
    targets = [RELAY, ORCHESTRATOR] if plan.baseline else [ORCHESTRATOR]
    results = []
    for clients, rate in loads:
        for target in targets:
            async with server(plan, target, clients) as running:
                spec = replace(
                    plan.template,
                    url=running.url,
                    clients=clients,
                    rate=rate,
                    processes=generator_processes(plan, clients),
                )
                row = await measure(spec, running.pid, plan.probe_interval, generator_cpus)
            row.update(target=target, clients=clients, idle=rate == 0)
            results.append(row)
            progress(one_line(row))
    return results


def one_line(row: dict) -> str:
    d, p = row["data_ms"], row["probe_command_ms"]
    return (
        f"{row['target']:>12} N={row['clients']:<5} data p50 {fmt(d['p50'])} p99 {fmt(d['p99'])} ms, "
        f"probe p99 {fmt(p['p99'])} ms, delivered {row['delivered']}/{row['expected']}, "
        f"server CPU {fmt(row['server_cpu_pct'])}%, generator CPU {fmt(row['generator_cpu_pct'])}%, "
        f"errors {row['error_count']}"
    )


def fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}" if abs(x) < 100 else f"{x:,.0f}"


def ratio(a: float, b: float) -> str:
    return "-" if not b or math.isnan(a) or math.isnan(b) else f"{a / b:.2f}"


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"nproc {os.cpu_count()} ({model}), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, load average at the end {load}"
    )


def render(results: list[dict], plan: Plan, argv: list[str], started_at: datetime.datetime) -> str:
    t = plan.template
    load = [r for r in results if not r["idle"]]
    idle = [r for r in results if r["idle"]]
    out = [
        "# Messaging benchmark",
        "",
        f"Command: `{shlex.join(['python', *argv])}`  ",
        f"Date: {started_at:%Y-%m-%d %H:%M} UTC  ",
        f"Machine: {machine()}  ",
        f"Load: N clients in sessions of {t.session_size}, each sending a {t.payload:,}-byte `SendData` "
        f"{t.rate:g} times a second to every other member (all registered); {t.duration:g} s per row "
        f"(first {t.warmup:g} s not timed), then {t.drain:g} s drain before counting. "
        f"Probe: one command or message round trip every {plan.probe_interval * 1000:g} ms. "
        f"Each server is a fresh process per row{', pinned to its own CPU' if plan.pin else ', not pinned'}.",
        "",
    ]
    if load:
        out += [
            "## Data plane",
            "",
            "| N | server | data p50 | p99 | max (ms) | sent | delivered | dropped | server CPU % "
            "| CPU µs/msg | RSS MB | generator CPU % (procs) | generator lag p99 (ms) | errors |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in load:
            d = r["data_ms"]
            out.append(
                f"| {r['clients']} | {r['target']} | {fmt(d['p50'])} | {fmt(d['p99'])} | {fmt(d['max'])} "
                f"| {r['sent']:,} | {r['delivered']:,} | {r['dropped']:,} | {fmt(r['server_cpu_pct'])} "
                f"| {fmt(r['server_cpu_us_per_msg'])} | {fmt(r['server_rss_max_mb'])} "
                f"| {fmt(r['generator_cpu_pct'])} ({r['generator_processes']}) "
                f"| {fmt(r['generator_lag_ms']['p99'])} | {r['error_count']} |"
            )
        out += [
            "",
            "## Probe round trips while loaded (ms)",
            "",
            "| N | server | command min | avg | p50 | p99 | max | message p50 | p99 | max | timeouts |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in load:
            c, m = r["probe_command_ms"], r["probe_message_ms"]
            out.append(
                f"| {r['clients']} | {r['target']} | {fmt(c['min'])} | {fmt(c['avg'])} | {fmt(c['p50'])} "
                f"| {fmt(c['p99'])} | {fmt(c['max'])} | {fmt(m['p50'])} | {fmt(m['p99'])} | {fmt(m['max'])} "
                f"| {r['probe_timeouts']} |"
            )
        out += ratios(load)
    if idle:
        out += [
            "",
            "## Idle connections (logged in, in sessions, not sending)",
            "",
            "| N | server | RSS MB before → with clients | CPU % | probe avg | p99 | max (ms) | errors |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in idle:
            c = r["probe_command_ms"]
            out.append(
                f"| {r['clients']} | {r['target']} | {fmt(r['server_rss_idle_mb'])} → "
                f"{fmt(r['server_rss_max_mb'])} | {fmt(r['server_cpu_pct'])} | {fmt(c['avg'])} "
                f"| {fmt(c['p99'])} | {fmt(c['max'])} | {r['error_count']} |"
            )
    lags = [r for r in results if r["server_loop_lag"]]
    if lags:
        out += [
            "",
            "Server event-loop lag from its /metrics: "
            + "; ".join(
                f"N={r['clients']} {name} max {fmt(s['max'])}"
                for r in lags
                for name, s in r["server_loop_lag"].items()
            ),
        ]
    out += ["", NODE_REFERENCE, ""]
    return "\n".join(out)


def ratios(load: list[dict]) -> list[str]:
    pairs = {}
    for r in load:
        pairs.setdefault(r["clients"], {})[r["target"]] = r
    rows = [(n, p[ORCHESTRATOR], p[RELAY]) for n, p in pairs.items() if ORCHESTRATOR in p and RELAY in p]
    if not rows:
        return []
    out = [
        "",
        "## Orchestrator / bare relay (same run; 1.00 = as fast as the relay)",
        "",
        "| N | data p50 | data p99 | CPU per message | probe p99 |",
        "|---|---|---|---|---|",
    ]
    for n, o, b in rows:
        out.append(
            f"| {n} | {ratio(o['data_ms']['p50'], b['data_ms']['p50'])} "
            f"| {ratio(o['data_ms']['p99'], b['data_ms']['p99'])} "
            f"| {ratio(o['server_cpu_us_per_msg'], b['server_cpu_us_per_msg'])} "
            f"| {ratio(o['probe_command_ms']['p99'], b['probe_command_ms']['p99'])} |"
        )
    return out


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def main_argv() -> list[str]:
    return [
        os.path.relpath(sys.argv[0], REPO) if sys.argv[0].startswith(str(REPO)) else sys.argv[0],
        *sys.argv[1:],
    ]
