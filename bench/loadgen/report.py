"""Rendering the rows as the Markdown table published in bench/results/messaging.md."""

from __future__ import annotations

import datetime
import math
import os
import platform
import shlex
from pathlib import Path

RELAY, ORCHESTRATOR = "bare relay", "orchestrator"
NODE_REFERENCE = """\
Reference, not measured here: the Node.js orchestrator v2.7.4 publishes a probe round trip of
avg 5.25 / max 12 ms at 100 clients, 7 / 19 at 500, 8.95 / 23 at 1000 (0 dropped) and 36 / 118 at
2000 (167 of 240,543 packets dropped); on a 2-core machine with this kind of load on the same
machine it shows a data latency p99 of about 60 ms at 2000 clients and about 630 ms at 4000."""
PINNED = "pinned to CPU 0 (generator and probe on the others)"
DEFINITIONS = """\
Data latency: receive time minus the time the frame was due to be sent (stamped in its first
bytes), so a sender held back by a full socket counts as latency. Dropped: frames owed to
registered receivers (frames sent times other members) minus frames received, counted after the drain.
CPU µs/msg: server CPU over the window and drain divided by frames delivered. Other load: CPU the
rest of the machine used during the window (other processes and kernel threads), in cores."""


def fmt(x: float | int | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}" if abs(x) < 100 else f"{x:,.0f}"


def ratio(a: float, b: float) -> str:
    return "-" if not b or math.isnan(a) or math.isnan(b) else f"{a / b:.2f}"


def machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    model = next(
        (x.split(":", 1)[1].strip() for x in lines if x.startswith("model name")), platform.processor()
    )
    return (
        f"nproc {os.cpu_count()} ({model}), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, load average at the end "
        + ", ".join(f"{x:.2f}" for x in os.getloadavg())
    )


def representative(results: list[dict]) -> list[dict]:
    """One row per (N, idle, server): the median run by p99 (data when loaded, probe when idle)."""
    groups: dict[tuple, list[dict]] = {}
    for row in results:
        groups.setdefault((row["idle"], row["clients"], row["target"] != RELAY), []).append(row)

    def p99(row: dict) -> float:
        value = row["probe_command_ms" if row["idle"] else "data_ms"]["p99"]
        return math.inf if math.isnan(value) else value

    return [sorted(rows, key=p99)[len(rows) // 2] for _, rows in sorted(groups.items())]


def render(results: list[dict], settings: dict, argv: list[str], started: datetime.datetime) -> str:
    t = settings["template"]
    rows = representative(results)
    load, idle = [r for r in rows if not r["idle"]], [r for r in rows if r["idle"]]
    runs = settings["repeat"]
    out = [
        "# Messaging benchmark",
        "",
        f"Command: `{shlex.join(['python', *argv])}`  ",
        f"Date: {started:%Y-%m-%d %H:%M} UTC  ",
        f"Machine: {machine()}  ",
        f"Load: N clients in sessions of {t.session_size}, each sending a {t.payload:,}-byte `SendData` "
        f"{t.rate:g} times a second to every other member (all registered); {t.duration:g} s per row "
        f"(first {t.warmup:g} s not timed), then {t.drain:g} s drain before counting. Probe: one command "
        f"or message round trip every {settings['probe_interval'] * 1000:g} ms. Each server is a fresh "
        f"process per row, {PINNED if settings['pin'] else 'not pinned'}; the orchestrator"
        " with its capacity limits raised to fit N. "
        + (f"Each row is the median of {runs} runs by p99 (all runs are in the JSON)." if runs > 1 else ""),
        "",
        DEFINITIONS,
        "",
    ]
    if load:
        out += data_table(load) + probe_table(load) + ratios(load)
    if idle:
        out += idle_table(idle)
    out += [*profiles(rows), "", NODE_REFERENCE, ""]
    return "\n".join(out)


def data_table(rows: list[dict]) -> list[str]:
    out = [
        "## Data plane",
        "",
        "| N | server | data p50 | p99 | max (ms) | sent | delivered | dropped | server CPU % | CPU µs/msg "
        "| RSS MB | generator CPU % (procs) | generator lag p99 (ms) | other load | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d = r["data_ms"]
        out.append(
            f"| {r['clients']} | {r['target']} | {fmt(d['p50'])} | {fmt(d['p99'])} | {fmt(d['max'])} "
            f"| {r['sent']:,} | {r['delivered']:,} | {r['dropped']:,} | {fmt(r['server_cpu_pct'])} "
            f"| {fmt(r['server_cpu_us_per_msg'])} | {fmt(r['server_rss_max_mb'])} "
            f"| {fmt(r['generator_cpu_pct'])} ({r['generator_processes']}) "
            f"| {fmt(r['generator_lag_ms']['p99'])} "
            f"| {fmt(r['other_load_cores'])} | {r['error_count']} |"
        )
    return out


def probe_table(rows: list[dict]) -> list[str]:
    out = [
        "",
        "## Probe round trips while loaded (ms)",
        "",
        "| N | server | command min | avg | p50 | p99 | max | message p50 | p99 | max | timeouts |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c, m = r["probe_command_ms"], r["probe_message_ms"]
        out.append(
            f"| {r['clients']} | {r['target']} | {fmt(c['min'])} | {fmt(c['avg'])} | {fmt(c['p50'])} "
            f"| {fmt(c['p99'])} | {fmt(c['max'])} | {fmt(m['p50'])} | {fmt(m['p99'])} | {fmt(m['max'])} "
            f"| {r['probe_timeouts']} |"
        )
    return out


def ratios(rows: list[dict]) -> list[str]:
    pairs: dict[int, dict[str, dict]] = {}
    for r in rows:
        pairs.setdefault(r["clients"], {})[r["target"]] = r
    both = [(n, p[ORCHESTRATOR], p[RELAY]) for n, p in pairs.items() if ORCHESTRATOR in p and RELAY in p]
    if not both:
        return []
    out = [
        "",
        "## Orchestrator / bare relay (same run; 1.00 = as fast as the relay)",
        "",
        "| N | data p50 | data p99 | CPU per message | probe p99 | delivered |",
        "|---|---|---|---|---|---|",
    ]
    for n, o, b in both:
        out.append(
            f"| {n} | {ratio(o['data_ms']['p50'], b['data_ms']['p50'])} "
            f"| {ratio(o['data_ms']['p99'], b['data_ms']['p99'])} "
            f"| {ratio(o['server_cpu_us_per_msg'], b['server_cpu_us_per_msg'])} "
            f"| {ratio(o['probe_command_ms']['p99'], b['probe_command_ms']['p99'])} "
            f"| {ratio(o['delivered'] / max(1, o['expected']), b['delivered'] / max(1, b['expected']))} |"
        )
    return out


def idle_table(rows: list[dict]) -> list[str]:
    out = [
        "",
        "## Idle connections (logged in, in 2-user sessions, not sending)",
        "",
        "| N | server | RSS MB before → with clients | CPU % | probe avg | p99 | max (ms) | other load "
        "| errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = r["probe_command_ms"]
        out.append(
            f"| {r['clients']} | {r['target']} "
            f"| {fmt(r['server_rss_idle_mb'])} → {fmt(r['server_rss_max_mb'])} "
            f"| {fmt(r['server_cpu_pct'])} | {fmt(c['avg'])} | {fmt(c['p99'])} | {fmt(c['max'])} "
            f"| {fmt(r['other_load_cores'])} | {r['error_count']} |"
        )
    return out


def profiles(rows: list[dict]) -> list[str]:
    """py-spy's view of each profiled row: Python CPU share per package and the hottest frames."""
    out = []
    for r in rows:
        profile = r.get("server_profile")
        if not profile:
            continue
        if not out:
            out = ["", "## Where the server's Python time goes (py-spy, GIL-holding samples)"]
        packages = ", ".join(f"{name} {share}%" for share, name in profile["packages"][:8])
        out += ["", f"<details><summary>N={r['clients']} {r['target']}: {packages}</summary>", ""]
        out += [f"    {share:5.1f}%  {frame}" for share, frame in profile["self"]] + ["", "</details>"]
    return out
