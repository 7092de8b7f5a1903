"""DASH relay benchmark: per-chunk latency, long-poll wake, egress, ingest and live fan-out of
`python -m workers.dash`, each against a baseline measured in the same run.

Baselines: a direct loopback socket pair (no server: the floor of any latency) and
bench/dash/baseline.py (a store-less asyncio + uvloop pipe on the same stack: the floor of a
Python relay). Server processes get their own cores as far as 2 cores allow; the client is this
process, identical for every row, so ratios compare servers.

    python bench/dash_bench.py                  # print the table
    python bench/dash_bench.py --write          # also write bench/results/dash.md
    python bench/dash_bench.py --quick          # smaller sizes, for a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from time import perf_counter

import psutil
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.dash.clients import Conn, Direct, connect, frame, get_json, payload

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "dash.md"
KiB, MiB = 1024, 1024 * 1024
CHUNKED = "Transfer-Encoding: chunked\r\n"
ROUNDS = 5  # throughput rounds
LAT_ROUNDS = 10  # latency rounds (short: one connection pair each)


def start(cmd: list[str]) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if m := re.search(r"listening on 127\.0\.0\.1:(\d+)", line):
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep the pipe drained
            return proc, int(m.group(1))
    raise RuntimeError(f"{cmd} did not start (exit {proc.wait()})")


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


# --- scenarios ------------------------------------------------------------------------------------
async def open_stream(kind: str, port: int, path: str) -> tuple[Conn, Conn]:
    """(writer, reader) of one chunked upload followed by one GET, ready for payload."""
    if kind == "direct":
        return await Direct().open()
    reader, writer = await connect(port), await connect(port)
    reader.write(f"GET {path} HTTP/1.1\r\n\r\n".encode())
    if kind in ("baseline", "asgi"):  # the pipes only forward to readers subscribed before the upload
        await reader.heads.get()
    writer.write(f"POST {path} HTTP/1.1\r\n{CHUNKED}\r\n".encode())
    if kind == "relay":
        await reader.heads.get()
    return writer, reader


async def chunk_latency(kind: str, port: int, size: int, n: int) -> list[float]:
    """One chunk in flight at a time: time from the writer's send to the reader holding all of it."""
    writer, reader = await open_stream(kind, port, f"/bench/lat/{size}/{time.monotonic_ns()}")
    data = frame(payload(size))
    lat = []
    for i in range(n + 10):
        fut = reader.wait_total(reader.total + size)
        t0 = perf_counter()
        writer.write(data)
        t1 = await fut
        if i >= 10:  # warm-up excluded
            lat.append((t1 - t0) * 1000)
    writer.write(b"0\r\n\r\n")
    writer.transport.close()
    reader.transport.close()
    return lat


async def long_poll_wake(port: int, n: int) -> list[float]:
    """GET of a missing resource, then the upload that creates it: time to the reader's 200."""
    lat = []
    for i in range(n):
        path = f"/bench/wake/{i}/{time.monotonic_ns()}"
        reader, writer = await connect(port), await connect(port)
        reader.write(f"GET {path} HTTP/1.1\r\n\r\n".encode())
        for _ in range(1000):
            if (await get_json(port, "/stats"))["long_poll_waiters"] == 1:
                break
        t0 = perf_counter()
        writer.write(f"POST {path} HTTP/1.1\r\n{CHUNKED}\r\n".encode() + frame(b"x" * 1024))
        _, t1 = await reader.heads.get()
        lat.append((t1 - t0) * 1000)
        writer.write(b"0\r\n\r\n")
        await reader.done.get()
        writer.transport.close()
        reader.transport.close()
    return lat


async def upload(conn: Conn, path: str, size: int, chunk: int) -> int:
    conn.write(f"POST {path} HTTP/1.1\r\n{CHUNKED}\r\n".encode())
    data = frame(payload(chunk))
    for _ in range(size // chunk):
        conn.write(data)
        await conn.drain()
    conn.write(b"0\r\n\r\n")
    status, _ = await conn.heads.get()
    return status


async def egress(kind: str, port: int, readers: int, reps: int, size: int, chunk: int) -> tuple[float, int]:
    """(seconds, bytes) to deliver to `readers` concurrent GETs a complete resource `reps` times each."""
    if kind == "relay":
        path = f"/bench/egress/{time.monotonic_ns()}"
        w = await connect(port)
        assert await upload(w, path, size, chunk) == 200
        request = f"GET {path} HTTP/1.1\r\n\r\n".encode()
    else:
        request = f"GET /blob?size={size}&chunk={chunk} HTTP/1.1\r\n\r\n".encode()
    conns = [await connect(port) for _ in range(readers)]

    async def fetch(c: Conn) -> None:
        for _ in range(reps):
            c.write(request)
            await c.done.get()

    t0 = perf_counter()
    await asyncio.gather(*(fetch(c) for c in conns))
    elapsed = perf_counter() - t0
    assert all(c.total == reps * size for c in conns), [c.total for c in conns][:5]
    for c in conns:
        c.transport.close()
    if kind == "relay":
        w.write(f"DELETE {path} HTTP/1.1\r\n\r\n".encode())
        await w.heads.get()
        w.transport.close()
    return elapsed, readers * reps * size


async def ingest(kind: str, port: int, total: int, resource: int, chunk: int) -> tuple[float, int]:
    """(seconds, bytes) of chunked uploads with no reader (relay: stored, then deleted; pipe: dropped)."""
    w = await connect(port)
    t0 = perf_counter()
    for i in range(total // resource):
        path = f"/bench/ingest/{i}/{time.monotonic_ns()}"
        assert await upload(w, path, resource, chunk) == 200
        if kind == "relay":
            w.write(f"DELETE {path} HTTP/1.1\r\n\r\n".encode())
            assert (await w.heads.get())[0] == 200
    elapsed = perf_counter() - t0
    w.transport.close()
    return elapsed, total


async def fanout(kind: str, port: int, pid: int, readers: int, frames: int, size: int,
                 fps: int) -> tuple[list[float], int, float]:
    """A live upload at `fps` fanned out to `readers` GETs: (per-frame latencies over all readers,
    frames delivered, server CPU as a fraction of one core)."""
    path = f"/bench/fanout/{time.monotonic_ns()}"
    conns = [await connect(port) for _ in range(readers)]
    for c in conns:
        c.write(f"GET {path} HTTP/1.1\r\n\r\n".encode())
    if kind == "baseline":
        await asyncio.gather(*(c.heads.get() for c in conns))
    writer = await connect(port)
    writer.write(f"POST {path} HTTP/1.1\r\n{CHUNKED}\r\n".encode())
    if kind == "relay":
        await asyncio.gather(*(c.heads.get() for c in conns))
    sent: list[float] = []
    lat: list[float] = []

    def tracker():
        seen = 0

        def progress(total: int, t: float) -> None:
            nonlocal seen
            while seen < total // size:
                lat.append((t - sent[seen]) * 1000)
                seen += 1

        return progress

    for c in conns:
        c.on_progress = tracker()
    data = [frame(payload(size, seed=j)) for j in range(8)]
    loop = asyncio.get_running_loop()
    t0, c0 = loop.time(), cpu_s(pid)
    for j in range(frames):
        await asyncio.sleep(max(0.0, t0 + j / fps - loop.time()))
        sent.append(perf_counter())
        writer.write(data[j % 8])
    writer.write(b"0\r\n\r\n")
    await asyncio.wait_for(asyncio.gather(*(c.done.get() for c in conns)), 30)
    cpu = (cpu_s(pid) - c0) / (loop.time() - t0)
    for c in (*conns, writer):
        c.transport.close()
    return lat, sum(c.total for c in conns) // size, cpu


# --- the table -------------------------------------------------------------------------------------
def cpu_s(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


Run = tuple[Callable[[], Awaitable[tuple[float, int]]], int]  # (seconds, bytes) measurement, server pid


async def interleaved(k: int, *runs: Run) -> list[tuple[float, float]]:
    """(median MB/s, median server CPU seconds per GB) over k rounds; the runs alternate within a
    round so that drift on a shared machine hits each alike."""
    rates: list[list[float]] = [[] for _ in runs]
    cpus: list[list[float]] = [[] for _ in runs]
    for _ in range(k):
        for i, (fn, pid) in enumerate(runs):
            c0 = cpu_s(pid)
            elapsed, nbytes = await fn()
            cpus[i].append((cpu_s(pid) - c0) / nbytes * 1e9)
            rates[i].append(nbytes / elapsed / 1e6)
    return [(statistics.median(r), statistics.median(c)) for r, c in zip(rates, cpus, strict=True)]


def egress_run(kind: str, port: int, pid: int, readers: int, reps: int, size: int) -> Run:
    return (lambda: egress(kind, port, readers, reps, size, 256 * KiB)), pid


def ingest_run(kind: str, port: int, pid: int) -> Run:
    return (lambda: ingest(kind, port, 128 * MiB, 32 * MiB, 256 * KiB)), pid


def rate(v: tuple[float, float]) -> str:
    return f"{v[0]:.0f} MB/s, {v[1]:.2f} CPU-s/GB"


async def run(relay: int, base: int, pids: dict[str, int], quick: bool) -> list[list[str]]:
    rows: list[list[str]] = []

    def ms(v: float) -> str:
        return f"{v:.3f} ms"

    scale = 5 if quick else 1
    d1 = 0.0  # direct 1 KiB p50, the yardstick of the long-poll wake
    for size, n in ((1 * KiB, 1000 // scale), (64 * KiB, 500 // scale), (512 * KiB, 300 // scale)):
        d, b, r = [], [], []
        for _ in range(LAT_ROUNDS):  # interleaved, so drift on a shared machine hits every server alike
            d += await chunk_latency("direct", 0, size, n // LAT_ROUNDS)
            b += await chunk_latency("baseline", base, size, n // LAT_ROUNDS)
            r += await chunk_latency("relay", relay, size, n // LAT_ROUNDS)
        added = pct(r, 0.5) - pct(d, 0.5)
        rows.append([f"per-chunk latency p50, {size // KiB} KiB chunks (n={n})",
                     f"direct {ms(pct(d, 0.5))} / pipe {ms(pct(b, 0.5))}", ms(pct(r, 0.5)),
                     f"{pct(r, 0.5) / pct(b, 0.5):.2f}x pipe", f"added {ms(added)} (< 1 ms)",
                     "yes" if added < 1 else "NO"])
        rows.append([f"per-chunk latency p99, {size // KiB} KiB chunks",
                     f"direct {ms(pct(d, 0.99))} / pipe {ms(pct(b, 0.99))}", ms(pct(r, 0.99)),
                     f"{pct(r, 0.99) / pct(b, 0.99):.2f}x pipe", "", ""])
        if size == KiB:
            d1 = pct(d, 0.5)
    w = await long_poll_wake(relay, 30 if quick else 100)
    rows.append([f"long-poll wake p50 / p99 (n={len(w)})", f"direct 1 KiB {ms(d1)}",
                 f"{ms(pct(w, 0.5))} / {ms(pct(w, 0.99))}", f"{pct(w, 0.5) / d1:.1f}x direct", "< 10 ms",
                 "yes" if pct(w, 0.99) < 10 else "NO"])
    k = 3 if quick else ROUNDS
    for readers, reps, size in ((1, 16, 8 * MiB), (10, 2, 8 * MiB), (100, 1, 2 * MiB)):
        b, r = await interleaved(k, egress_run("blob", base, pids["pipe"], readers, reps, size),
                                 egress_run("relay", relay, pids["relay"], readers, reps, size))
        rows.append([f"egress, {readers} concurrent GETs of a complete {size // MiB} MiB resource "
                     f"(median of {k} rounds of {readers * reps * size // MiB} MiB)",
                     "pipe " + rate(b), rate(r),
                     f"{r[0] / b[0]:.2f}x MB/s, {r[1] / b[1]:.2f}x CPU", ">= 200 MB/s",
                     "yes" if r[0] >= 200 else "NO"])
    b, r = await interleaved(k, ingest_run("baseline", base, pids["pipe"]),
                             ingest_run("relay", relay, pids["relay"]))
    rows.append([f"ingest, chunked uploads of 32 MiB in 256 KiB chunks (median of {k} rounds of 128 MiB)",
                 "pipe " + rate(b), rate(r), f"{r[0] / b[0]:.2f}x MB/s, {r[1] / b[1]:.2f}x CPU", "", ""])
    frames = 30 if quick else 90
    bl, _, bc = await fanout("baseline", base, pids["pipe"], 100, frames, 32 * KiB, 30)
    rl, rn, rc = await fanout("relay", relay, pids["relay"], 100, frames, 32 * KiB, 30)
    rows.append([f"live fan-out, 100 GETs of one 30 fps upload, 32 KiB frames: frame latency p50 / p99, "
                 f"server CPU (n={len(rl)})",
                 f"pipe {ms(pct(bl, 0.5))} / {ms(pct(bl, 0.99))}, {bc:.0%}",
                 f"{ms(pct(rl, 0.5))} / {ms(pct(rl, 0.99))}, {rc:.0%}",
                 f"{pct(rl, 0.5) / pct(bl, 0.5):.2f}x p50, {rc / bc:.2f}x CPU", ">= 100 GETs, every frame",
                 "yes" if rn == 100 * frames else f"NO ({rn} of {100 * frames})"])
    return rows


async def candidates(relay: int, base: int, asgi: int, pids: dict[str, int], quick: bool) -> list[list[str]]:
    """The server choice: the same pipe hand-written on asyncio vs. as an ASGI app on uvicorn."""
    rows = []
    n = 200 if quick else 1000
    for size in (1 * KiB, 64 * KiB):
        lat = {k: [] for k in ("baseline", "asgi", "relay")}
        for _ in range(ROUNDS):
            for kind, port in (("baseline", base), ("asgi", asgi), ("relay", relay)):
                lat[kind] += await chunk_latency(kind, port, size, n // ROUNDS)
        p = {k: pct(v, 0.5) for k, v in lat.items()}
        rows.append([f"per-chunk latency p50, {size // KiB} KiB", f"{p['baseline']:.3f} ms",
                     f"{p['asgi']:.3f} ms", f"{p['relay']:.3f} ms", f"{p['asgi'] / p['baseline']:.2f}x"])
    k = 3 if quick else ROUNDS
    for readers, reps, size in ((1, 16, 8 * MiB), (100, 1, 2 * MiB)):
        b, a, r = await interleaved(k, egress_run("blob", base, pids["pipe"], readers, reps, size),
                                    egress_run("blob", asgi, pids["asgi"], readers, reps, size),
                                    egress_run("relay", relay, pids["relay"], readers, reps, size))
        rows.append([f"egress, {readers} GETs of {size // MiB} MiB (median of {k})", rate(b), rate(a),
                     rate(r),
                     f"{a[0] / b[0]:.2f}x MB/s, {a[1] / b[1]:.2f}x CPU"])
    frames = 30 if quick else 90
    res = {name: await fanout("relay" if name == "relay" else "baseline", port, pids[name], 100, frames,
                              32 * KiB, 30)
           for name, port in (("pipe", base), ("asgi", asgi), ("relay", relay))}
    cells = {k: f"{pct(v[0], 0.5):.3f} / {pct(v[0], 0.99):.3f} ms, CPU {v[2]:.0%}" for k, v in res.items()}
    rows.append(["live fan-out to 100 GETs, 30 fps x 32 KiB: frame latency p50 / p99, server CPU",
                 cells["pipe"], cells["asgi"], cells["relay"],
                 f"{pct(res['asgi'][0], 0.5) / pct(res['pipe'][0], 0.5):.2f}x p50, "
                 f"{res['asgi'][2] / res['pipe'][2]:.2f}x CPU"])
    return rows


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    return [f"| {' | '.join(head)} |", "|" + "---|" * len(head), *(f"| {' | '.join(r)} |" for r in rows)]


def render(rows: list[list[str]], command: str, elapsed: float, choice: list[list[str]]) -> str:
    lines = [
        "## DASH relay (`python -m workers.dash`)", "",
        f"Command: `{command}` ({time.strftime('%Y-%m-%d')}, {elapsed:.0f} s, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, uvloop {uvloop.__version__}, loopback).", "",
        *table(["measurement", "baseline", "dash relay", "ratio", "target", "met"], rows), "",
        "Baselines, measured in the same run with the same client: *direct* is a loopback socket pair with "
        "no server (the floor of any latency); *pipe* (bench/dash/baseline.py) is a store-less asyncio + "
        "uvloop server that forwards an upload's bytes unparsed to subscribed readers and serves egress "
        "from one pre-framed buffer. *added* = relay p50 - direct p50. Latency is timed inside the "
        "client's `data_received`, from the writer's send to the reader holding the whole chunk, one "
        "chunk in flight, in 10 interleaved rounds per server. The client shares the 2 cores with the "
        "servers, so absolute MB/s are client-bound; ratios are the comparable numbers. Differences "
        "below ~0.05 ms between the two servers swing either way from run to run on this shared machine; "
        "server CPU is read from /proc in 10 ms ticks, so CPU ratios are rough.", ""]
    if choice:
        lines += ["Server choice (`--candidates`): the same store-less pipe hand-written on asyncio "
                  "(bench/dash/baseline.py) and as a raw ASGI app on uvicorn + httptools "
                  "(bench/dash/asgi_pipe.py), next to the relay itself:", "",
                  *table(["measurement", "asyncio pipe", "uvicorn ASGI pipe", "dash relay", "ASGI / asyncio"],
                         choice), ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes and counts (smoke run)")
    ap.add_argument("--write", action="store_true", help=f"write the table to {OUT.relative_to(REPO)}")
    ap.add_argument("--candidates", action="store_true", help="also compare with a uvicorn ASGI pipe")
    args = ap.parse_args()
    flags = " --quick" * args.quick + " --candidates" * args.candidates + " --write" * args.write
    command = ".venv/bin/python bench/dash_bench.py" + flags
    relay, relay_port = start([sys.executable, "-m", "workers.dash", "--host", "127.0.0.1", "--port", "0"])
    base, base_port = start([sys.executable, "-m", "bench.dash.baseline", "--port", "0"])
    procs = [relay, base]
    t0 = time.monotonic()
    try:
        pids = {"relay": relay.pid, "pipe": base.pid}
        rows = uvloop.run(run(relay_port, base_port, pids, args.quick))
        choice = []
        if args.candidates:
            asgi, asgi_port = start([sys.executable, "-m", "bench.dash.asgi_pipe", "--port", "0"])
            procs.append(asgi)
            pids["asgi"] = asgi.pid
            choice = uvloop.run(candidates(relay_port, base_port, asgi_port, pids, args.quick))
    finally:
        for p in procs:
            p.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)
            if p.poll() is None:
                p.kill()
    text = render(rows, command, time.monotonic() - t0, choice)
    print(text)
    if args.write:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(text)


if __name__ == "__main__":
    main()
