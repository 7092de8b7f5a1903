"""Rendering the rows as the Markdown table published in bench/results/messaging.md."""

from __future__ import annotations

import datetime
import math
import os
import platform
import statistics
from collections import Counter
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


SUMMED = ("sent", "skipped", "expected", "received", "delivered", "dropped", "out_of_order", "error_count",
          "probe_timeouts")
SUMMARIES = ("data_ms", "probe_command_ms", "probe_message_ms", "generator_lag_ms")


def median(values: list[float]) -> float:
    """Median that ignores NaN (a figure a run did not have); NaN when no run had it."""
    values = sorted(v for v in values if not math.isnan(v))
    return statistics.median(values) if values else math.nan


def p99(row: dict) -> float:
    """The figure a row is judged by: data p99 when loaded, probe p99 when idle."""
    return row["probe_command_ms" if row["idle"] else "data_ms"]["p99"]


def combine(runs: list[dict]) -> dict:
    """One row from repeated runs: the median of every figure, counts summed over the runs, each
    run's p99 kept so the spread stays visible, the profile of the median run."""
    by_p99 = sorted(runs, key=lambda r: math.inf if math.isnan(p99(r)) else p99(r))
    row = dict(by_p99[len(runs) // 2])
    for key, value in runs[0].items():
        if key in SUMMED:
            row[key] = sum(r[key] for r in runs)
        elif isinstance(value, float):
            row[key] = median([r[key] for r in runs])
        elif key in SUMMARIES:
            row[key] = {k: median([r[key][k] for r in runs]) for k in value}
    row["errors"] = dict(sum((Counter(r["errors"]) for r in runs), Counter()))
    row["loop_lag_ms"] = median([loop_lag_ms(r) for r in runs])
    row["p99_runs"] = [p99(r) for r in runs]
    return row


def combined(results: list[dict]) -> list[dict]:
    """One row per (idle, N, server), in table order."""
    groups: dict[tuple, list[dict]] = {}
    for row in results:
        groups.setdefault((row["idle"], row["clients"], row["target"] != RELAY), []).append(row)
    return [combine(runs) for _, runs in sorted(groups.items())]


def document(results: list[dict], settings: dict, command: str, started: datetime.datetime) -> dict:
    """Everything the Markdown is rendered from, saved as JSON so it can be re-rendered later."""
    return {"command": command, "started": f"{started:%Y-%m-%d %H:%M} UTC", "machine": machine(),
            "settings": settings, "rows": results}


RELAYS = {
    "asgi": "Baseline (`bare relay` rows): `bench/loadgen/bare_relay.py`, a plain ASGI relay on uvicorn "
            "with canned command answers; every message goes through ASGI's receive and send.",
    "direct": "Baseline (`bare relay` rows): `bench/loadgen/bare_relay.py --direct`, the relay with the "
              "transport shortcuts the orchestrator's data path takes (SendData taken from uvicorn's "
              "parser, frames written straight to the transports), so the ratios price the "
              "orchestrator's logic alone.",
}


def render(doc: dict) -> str:
    t, settings = doc["settings"]["load"], doc["settings"]
    rows = combined(doc["rows"])
    load, idle = [r for r in rows if not r["idle"]], [r for r in rows if r["idle"]]
    runs = settings["repeat"]
    out = [
        "# Messaging benchmark" + (" against the direct relay" if settings.get("relay") == "direct" else ""),
        "",
        f"Command: `{doc['command']}`  ",
        f"Date: {doc['started']}  ",
        f"Machine: {doc['machine']}  ",
        f"Orchestrator measured: {doc.get('code', 'not recorded')}  ",
        f"Load: N clients in sessions of {t['session_size']}, each sending a {t['payload']:,}-byte "
        f"`SendData` {t['rate']:g} times a second to every other member (all registered); "
        f"{t['duration']:g} s per row (first {t['warmup']:g} s not timed), then {t['drain']:g} s drain "
        f"before counting. Probe: one command or message round trip every "
        f"{settings['probe_interval'] * 1000:g} ms. Each server is a fresh process per row, "
        f"{PINNED if settings['pin'] else 'not pinned'}; the orchestrator with its capacity limits raised "
        "to fit N. "
        + (f"Each row combines {runs} runs: medians, counts summed over the runs, the p99 of each run "
           "listed (every figure of every run is in the JSON)." if runs > 1 else ""),
        "",
        RELAYS[settings.get("relay", "asgi")],
        "",
        DEFINITIONS,
        "",
    ]
    if load:
        out += data_table(load) + probe_table(load) + ratios(load)
    if idle:
        out += idle_table(idle)
    out += [*errors(rows), *profiles(rows), "", NODE_REFERENCE, ""]
    return "\n".join(out)


def loop_lag_ms(row: dict) -> float:
    """Largest event-loop lag the server reported on /metrics during the window (latest-lag gauge)."""
    series = [s for name, s in row.get("server_loop_lag", {}).items() if "max" not in name]
    return series[0]["max"] * 1000 if series else math.nan


def each(row: dict) -> str:
    return " / ".join(fmt(x) for x in row["p99_runs"])


def data_table(rows: list[dict]) -> list[str]:
    out = [
        "## Data plane",
        "",
        "| N | server | data p50 | p99 | max (ms) | p99 of each run | sent | delivered | dropped "
        "| server CPU % | CPU µs/msg | server loop lag max (ms) | RSS MB | generator CPU % (procs) "
        "| generator lag p99 (ms) | other load | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d = r["data_ms"]
        out.append(
            f"| {r['clients']} | {r['target']} | {fmt(d['p50'])} | {fmt(d['p99'])} | {fmt(d['max'])} "
            f"| {each(r)} | {r['sent']:,} | {r['delivered']:,} | {r['dropped']:,} "
            f"| {fmt(r['server_cpu_pct'])} | {fmt(r['server_cpu_us_per_msg'])} | {fmt(r['loop_lag_ms'])} "
            f"| {fmt(r['server_rss_max_mb'])} | {fmt(r['generator_cpu_pct'])} ({r['generator_processes']}) "
            f"| {fmt(r['generator_lag_ms']['p99'])} | {fmt(r['other_load_cores'])} | {r['error_count']} |"
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
        "| N | server | RSS MB before → with clients | CPU % | server loop lag max (ms) | probe avg | p99 "
        "| max (ms) | p99 of each run | other load | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = r["probe_command_ms"]
        out.append(
            f"| {r['clients']} | {r['target']} "
            f"| {fmt(r['server_rss_idle_mb'])} → {fmt(r['server_rss_max_mb'])} "
            f"| {fmt(r['server_cpu_pct'])} | {fmt(r['loop_lag_ms'])} | {fmt(c['avg'])} | {fmt(c['p99'])} "
            f"| {fmt(c['max'])} | {each(r)} | {fmt(r['other_load_cores'])} | {r['error_count']} |"
        )
    return out


def errors(rows: list[dict]) -> list[str]:
    """What went wrong, per row, in the generator's words (summed over the runs)."""
    failed = [r for r in rows if r["errors"]]
    if not failed:
        return []
    return ["", "## Errors seen by the generator (all runs)", ""] + [
        f"- N={r['clients']} {r['target']}: " + "; ".join(f"{what}: {n:,}" for what, n in r["errors"].items())
        for r in failed
    ]


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
