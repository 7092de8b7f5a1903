"""The whole table: for each N, the bare relay then the orchestrator, each in a fresh process
(repeated when asked, so noise shows as spread), then the idle-connections row."""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path

from .generator import LoadSpec
from .report import ORCHESTRATOR, RELAY, fmt
from .row import measure
from .servers import REPO, Server, free_port, orchestrator_argv, orchestrator_env, relay_argv, started


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
    relay_direct: bool = False  # the relay with the orchestrator's transport shortcuts (bare_relay --direct)
    pin: bool = False
    processes: int = 0  # 0 = one generator process per 2000 clients, at most nproc
    probe_interval: float = 0.1
    repeat: int = 1
    profile: bool = False
    log_dir: Path = REPO / "bench" / "out"


def generator_processes(plan: Plan, clients: int) -> int:
    if plan.processes:
        return plan.processes
    return max(1, min(os.cpu_count() or 1, math.ceil(clients / 2000)))


def cpu_split(plan: Plan) -> tuple[list[int] | None, list[int] | None]:
    """With --pin: the server gets the first CPU, generators and probe the others (asked once,
    before this process pins itself)."""
    cpus = sorted(os.sched_getaffinity(0))
    if not plan.pin or len(cpus) < 2:
        return None, None
    return cpus[:1], cpus[1:]


def label(target: str) -> str:
    return "relay" if target == RELAY else "orchestrator"


@contextlib.asynccontextmanager
async def server(
    plan: Plan, target: str, clients: int, attempt: int, cpus: list[int] | None
) -> AsyncIterator[Server]:
    if target == ORCHESTRATOR and plan.server_url:
        yield Server(target, plan.server_url, plan.server_pid)
        return
    port = free_port(plan.host)
    if target == RELAY:
        argv, env = relay_argv(plan.host, port, plan.relay_direct), None
    else:
        argv = orchestrator_argv(plan.host, port, plan.server_cmd)
        env = orchestrator_env(clients, plan.template.session_size, plan.log_dir)
    log = plan.log_dir / f"{label(target)}-{clients}-{attempt}.log"
    async with started(target, argv, f"http://{plan.host}:{port}", log, cpus, env) as running:
        yield running


async def run(plan: Plan, progress: Callable[[str], None]) -> list[dict]:
    """Every row, one server process at a time; relay and orchestrator alternate so each pair
    shares the machine's conditions as closely as possible."""
    server_cpus, generator_cpus = cpu_split(plan)
    if generator_cpus:
        os.sched_setaffinity(0, generator_cpus)
    loads = [(n, plan.template.rate) for n in plan.rows] + ([(plan.idle, 0.0)] if plan.idle else [])
    targets = [RELAY, ORCHESTRATOR] if plan.baseline else [ORCHESTRATOR]
    results = []
    for clients, rate in loads:
        for attempt in range(plan.repeat):
            for target in targets:
                profile = (
                    plan.log_dir / f"profile-{label(target)}-{clients}-{attempt}.txt"
                    if plan.profile
                    else None
                )
                async with server(plan, target, clients, attempt, server_cpus) as running:
                    spec = replace(
                        plan.template,
                        url=running.url,
                        clients=clients,
                        rate=rate,
                        processes=generator_processes(plan, clients),
                    )
                    row = await measure(spec, running.pid, plan.probe_interval, generator_cpus, profile)
                row.update(target=target, clients=clients, idle=rate == 0, attempt=attempt)
                results.append(row)
                progress(one_line(row))
    return results


def one_line(row: dict) -> str:
    d, p = row["data_ms"], row["probe_command_ms"]
    return (
        f"{row['target']:>12} N={row['clients']:<5} data p50 {fmt(d['p50'])} p99 {fmt(d['p99'])} ms, "
        f"probe p99 {fmt(p['p99'])} ms, delivered {row['delivered']}/{row['expected']}, "
        f"server CPU {fmt(row['server_cpu_pct'])}%, generator CPU {fmt(row['generator_cpu_pct'])}%, "
        f"other load {fmt(row['other_load_cores'])} cores, errors {row['error_count']}"
    )


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def main_argv() -> list[str]:
    """sys.argv with the script path relative to the repository, as someone would retype it."""
    script = sys.argv[0]
    return [os.path.relpath(script, REPO) if script.startswith(str(REPO)) else script, *sys.argv[1:]]
