"""One row of the table: generator processes plus probe and monitor against one running server.

Timeline, all on CLOCK_MONOTONIC: set-up (ramped, not measured) → t0 → warm-up → measured
sending window → end (senders stop) → drain (late frames still count as delivered) → counts.
Server CPU % is taken over [t0, end]; CPU per message over [t0, end of drain] divided by the
frames delivered, so work spent on frames that were later dropped is charged to the rest.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import multiprocessing
import time
from array import array
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import aiohttp
import psutil

from .generator import NS, LoadSpec, session_groups, sleep_until, worker_main
from .monitor import LagScraper, ProcessTree, sample
from .probe import Probe
from .profile import record, top_frames
from .servers import pin
from .stats import summary

SETUP_TIMEOUT_BASE_S = 60.0
SETUP_TIMEOUT_PER_CLIENT_S = 0.05


async def receive(pipe, process, timeout: float):
    """A message from a generator process, without parking a thread on the pipe."""
    deadline = time.monotonic() + timeout
    while not pipe.poll():
        if not process.is_alive():
            raise RuntimeError(f"generator process exited with status {process.exitcode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"generator process silent for {timeout:.0f} s")
        await asyncio.sleep(0.05)
    return pipe.recv()


def start_workers(spec: LoadSpec, cpus: list[int] | None) -> list[tuple]:
    groups = session_groups(spec.clients, spec.session_size)
    count = max(1, min(spec.processes, len(groups)))
    context = multiprocessing.get_context("spawn")
    workers = []
    for share in (groups[i::count] for i in range(count)):
        parent, child = context.Pipe()
        process = context.Process(
            target=worker_main,
            daemon=True,
            args=(child, asdict(spec), [(g.start, g.stop) for g in share], math.ceil(spec.ramp / count)),
        )
        process.start()
        child.close()
        if cpus:
            pin(process.pid, cpus)
        workers.append((process, parent))
    return workers


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent not idle, over all cores."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


async def measure(
    spec: LoadSpec,
    pid: int | None,
    probe_interval: float = 0.1,
    cpus: list[int] | None = None,
    profile_to: Path | None = None,
) -> dict:
    """Run one row against spec.url and return its merged figures (see merge())."""
    tree = ProcessTree(pid) if pid else None
    rss_idle = tree.rss_bytes() if tree else 0
    workers = start_workers(spec, cpus)
    try:
        setup_timeout = SETUP_TIMEOUT_BASE_S + SETUP_TIMEOUT_PER_CLIENT_S * spec.clients
        readies = [await receive(pipe, proc, setup_timeout) for proc, pipe in workers]
        async with aiohttp.ClientSession() as http:
            probe = Probe(http, spec.url, probe_interval)
            await probe.open()
            lag = LagScraper(http, spec.url)
            t0 = time.monotonic_ns() + NS // 2
            for _, pipe in workers:
                pipe.send(("go", t0))
            warm, end = t0 + int(spec.warmup * NS), t0 + int(spec.duration * NS)
            samples: list[tuple[float, float, int]] = []
            await sleep_until(t0)
            cpu0, own0, busy0 = tree.cpu_s() if tree else math.nan, time.process_time(), busy_cpu_s()
            sampler = asyncio.create_task(sample(tree, samples)) if tree else None
            probe_task = asyncio.create_task(probe.run(warm, end))
            await sleep_until(warm)
            profiler = await record(pid, (end - warm) / NS, profile_to) if pid and profile_to else None
            while time.monotonic_ns() < end:
                await lag.sample()
                await asyncio.sleep(min(1.0, max(0.0, (end - time.monotonic_ns()) / NS)))
            cpu1, own1, busy1 = tree.cpu_s() if tree else math.nan, time.process_time(), busy_cpu_s()
            await probe_task
            await sleep_until(end + int(spec.drain * NS))
            cpu2 = tree.cpu_s() if tree else math.nan
            if sampler:
                sampler.cancel()
            reports = [(await receive(pipe, proc, 60.0))[1] for proc, pipe in workers]
            for _, pipe in workers:
                pipe.send(("exit",))
            await probe.client.close()
            if profiler:
                await profiler.wait()
    except BaseException:
        for process, _ in workers:
            process.terminate()
        raise
    finally:
        for process, _ in workers:
            process.join(30)
            if process.is_alive():
                process.kill()
                process.join(5)
    server = {
        "cpu_send_s": cpu1 - cpu0,
        "cpu_total_s": cpu2 - cpu0,
        "samples": samples,
        "rss_idle": rss_idle,
        "machine_busy_s": busy1 - busy0,
        "coordinator_s": own1 - own0,
    }
    row = merge(spec, [r[1] for r in readies], reports, probe, lag, server)
    if profiler and profiler.returncode == 0:
        row["server_profile"] = top_frames(profile_to)
    return row


def merge(
    spec: LoadSpec, readies: list[dict], reports: list[dict], probe: Probe, lag: LagScraper, server: dict
) -> dict:
    latency, due_s = array("q"), array("H")
    errors: Counter[str] = Counter()
    for report in reports:
        latency.frombytes(report["latency_us"])
        due_s.frombytes(report["due_s"])
        errors.update(report["errors"])
    errors.update(probe.errors)
    total = {
        key: sum(r[key] for r in reports)
        for key in ("sent", "skipped", "expected", "received", "out_of_order")
    }
    gen_cpu = sum(r.get("cpu_s", 0.0) for r in reports)
    ours = (
        (0.0 if math.isnan(server["cpu_send_s"]) else server["cpu_send_s"])
        + gen_cpu
        + server["coordinator_s"]
    )
    gen_lag = [x for r in reports for x in r.get("loop_lag_ms", [])]
    rss = [rss for _, _, rss in server["samples"]]
    return {
        "spec": {k: v for k, v in asdict(spec).items() if k != "url"},
        "clients_connected": sum(r["clients"] for r in reports),
        "setup_s": max((r["setup_s"] for r in readies), default=math.nan),
        **total,
        "delivered": total["received"],
        "dropped": total["expected"] - total["received"],
        "data_ms": in_ms(summary(latency)),
        "data_ms_by_second": by_second(latency, due_s),
        "probe_command_ms": summary(probe.command_ms),
        "probe_message_ms": summary(probe.message_ms),
        "probe_timeouts": probe.timeouts,
        "server_cpu_pct": 100 * server["cpu_send_s"] / spec.duration,
        "server_cpu_us_per_msg": 1e6 * server["cpu_total_s"] / total["received"]
        if total["received"]
        else math.nan,
        "server_rss_idle_mb": server["rss_idle"] / 2**20,
        "server_rss_max_mb": max(rss) / 2**20 if rss else math.nan,
        "server_cpu_pct_by_second": [
            round(100 * (c1 - c0) / (t1 - t0), 1)
            for (t0, c0, _), (t1, c1, _) in itertools.pairwise(server["samples"])
        ],
        "server_loop_lag": {name: summary(values) for name, values in lag.series.items()},
        "generator_processes": len(reports),
        "generator_cpu_pct": 100 * gen_cpu / spec.duration,
        "generator_lag_ms": summary(gen_lag),
        "other_load_cores": max(0.0, server["machine_busy_s"] - ours) / spec.duration,  # clock-tick noise < 0
        "errors": dict(errors.most_common(10)),
        "error_count": sum(errors.values()),
    }


def in_ms(summary_us: dict) -> dict:
    return {k: (v / 1000 if k != "n" else v) for k, v in summary_us.items()}


def by_second(latency_us: array, due_s: array) -> list[dict]:
    """Latency of the frames due in each second of the window: a queue that grows shows as a slope."""
    seconds: dict[int, list[int]] = {}
    for second, value in zip(due_s, latency_us, strict=True):
        seconds.setdefault(second, []).append(value)
    return [{"s": second, **in_ms(summary(values))} for second, values in sorted(seconds.items())]
