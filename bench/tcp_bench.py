"""TCP reflector benchmark: `python -m workers.tcp` against a bare forwarder measured in the same run.

The baseline ("limit") is the forwarder at the bottom of this file: uvloop, one protocol per
connection, every chunk read written to every other connection, no framing, validation or
queueing. It is the least work any Python reflector can do, so worker/baseline ratios show what
validation, per-stream queues and accounting cost.

The load generator is this process (a sender thread and one thread per receiver, blocking
sockets); each server runs as its own process (with --pin the server gets CPU 0 and the load
generator CPU 1; on a machine shared with other work, pinning makes a preempted server wait, so it
is off by default). Every scenario starts a fresh server. A receiver checks every frame's
header, length and sequence number; end-to-end latency is from just before the sender's
sendall() to the receiver's read of the frame's last byte. The worker's own "added" latency
(last byte read → handed to the receiver's transport) comes from its /stats.

    python bench/tcp_bench.py                 # print the tables
    python bench/tcp_bench.py --write         # also write bench/results/tcp.md
    python bench/tcp_bench.py --quick         # a smoke run with fewer frames
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from workers.tcp.framing import HEADER_SIZE, build_header  # noqa: E402

OUT = REPO / "bench" / "results" / "tcp.md"
MB = 1_000_000
STAMP = struct.Struct("<qq")  # sequence number, send time (ns), at the start of every payload


WINDOW = 8  # frames a paced sender may be ahead of its slowest receiver (below the 10-frame queue)


@dataclass
class Scenario:
    name: str
    frames: int
    size: int
    receivers: int
    fps: float = 0.0  # 0: back to back
    window: int | None = WINDOW  # None: open loop, the sender never waits for receivers
    worker_flags: tuple[str, ...] = ()

    def scaled(self, quick: bool) -> Scenario:
        if not quick:
            return self
        return Scenario(self.name, max(30, self.frames // 10), self.size, self.receivers, self.fps,
                        self.window, self.worker_flags)


SCENARIOS = [
    Scenario("30 fps x 1 MB to 3", 300, MB, 3, fps=30, window=None),
    Scenario("burst 3000 x 100 KB to 1", 3000, 100_000, 1),
    Scenario("burst 3000 x 100 KB to 3", 3000, 100_000, 3),
    Scenario("burst 1000 x 1 MB to 3", 1000, MB, 3),
    Scenario("open-loop burst 3000 x 100 KB to 3", 3000, 100_000, 3, window=None),
    Scenario("open-loop burst 1000 x 1 MB to 3", 1000, MB, 3, window=None),
    Scenario("open-loop burst 3000 x 100 KB to 3, worker queues 3000 frames", 3000, 100_000, 3,
             window=None, worker_flags=("--queue-frames", "3000", "--queue-bytes", str(400 * MB))),
]


@dataclass
class Result:
    delivered: float  # fraction of (frames x receivers) received
    egress_mb_s: float
    e2e_ms: tuple[float, float]  # p50, p99
    added_ms: tuple[float | None, float | None]
    cpu_s: float
    wall_s: float
    gb: float
    rss_growth_mb: float
    drops: int | None = None
    errors: list[str] = field(default_factory=list)

    cpu_per_gb_runs: list[float] = field(default_factory=list)

    @property
    def cpu_per_gb(self) -> float:
        if self.cpu_per_gb_runs:
            return statistics.median(self.cpu_per_gb_runs)
        return self.cpu_s / self.gb if self.gb else float("nan")


# -- servers -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, kind: str, pin: bool, flags: tuple[str, ...] = ()) -> None:
        self.kind, self.port = kind, free_port()
        self.control = free_port() if kind == "worker" else None
        if kind == "worker":
            cmd = [sys.executable, "-m", "workers.tcp", "--host", "127.0.0.1", "--port", str(self.port),
                   "--control-port", str(self.control), "--log-level", "WARNING", *flags]
        else:
            cmd = [sys.executable, __file__, "--serve-baseline", str(self.port)]
        self.proc = subprocess.Popen(cmd, cwd=REPO)
        self.ps = psutil.Process(self.proc.pid)
        if pin and hasattr(os, "sched_setaffinity"):
            self.ps.cpu_affinity([0])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"{kind} did not start")

    def cpu(self) -> float:
        """CPU seconds of all the server's threads: nanoseconds from schedstat where Linux has it,
        since user/system times tick in 10 ms steps, too coarse for sub-second scenarios."""
        try:
            tasks = Path(f"/proc/{self.proc.pid}/task")
            return sum(int((t / "schedstat").read_text().split()[0]) for t in tasks.iterdir()) / 1e9
        except (OSError, ValueError):
            t = self.ps.cpu_times()
            return t.user + t.system

    def stats(self) -> dict | None:
        if self.control is None:
            return None
        with urllib.request.urlopen(f"http://127.0.0.1:{self.control}/stats", timeout=5) as r:
            return json.load(r)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- load generator ----------------------------------------------------------------------------


def recv_exact(sock: socket.socket, view: memoryview) -> bool:
    while view:
        n = sock.recv_into(view)
        if not n:
            return False
        view = view[n:]
    return True


class Receiver(threading.Thread):
    progress = threading.Condition()  # notified on every frame, for a paced sender

    def __init__(self, port: int, frames: int, size: int) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.frames, self.size = frames, size
        self.seen: list[int] = []
        self.latest = -1
        self.latency_ns: list[int] = []
        self.bytes = 0
        self.last_ns = 0
        self.errors: list[str] = []
        self.warm = threading.Event()

    def run(self) -> None:
        header = bytearray(HEADER_SIZE)
        body = bytearray(max(self.size, STAMP.size))
        hv, bv = memoryview(header), memoryview(body)
        self.sock.settimeout(3.0)
        try:
            while True:
                if not recv_exact(self.sock, hv):
                    self.errors.append("closed by server")
                    return
                length = int(header.split(b",", 4)[3])
                if length > len(body) or not header.startswith(b"2,bench/") or header[-1] != 10:
                    self.errors.append(f"bad header {bytes(header[:40])!r}")
                    return
                if not recv_exact(self.sock, bv[:length]):
                    self.errors.append("closed mid-frame")
                    return
                now = time.monotonic_ns()
                seq, sent = STAMP.unpack_from(body)
                if seq < 0:  # warm-up frame: proves this connection is registered
                    self.warm.set()
                    continue
                if length != self.size:
                    self.errors.append(f"frame {seq}: {length} bytes")
                self.seen.append(seq)
                self.latency_ns.append(now - sent)
                self.bytes += HEADER_SIZE + length
                self.last_ns = now
                with self.progress:
                    self.latest = seq
                    self.progress.notify_all()
                if seq == self.frames - 1:
                    return
        except TimeoutError:
            return  # the last frame never came (lost): the sequence numbers tell the rest
        finally:
            self.latest = self.frames  # never hold a paced sender back once this receiver is done
            with self.progress:
                self.progress.notify_all()
            self.sock.close()


def run_load(port: int, sc: Scenario) -> tuple[list[Receiver], int]:
    """Connect, warm up, send the scenario's frames; returns receivers and the first send time."""
    sender = socket.create_connection(("127.0.0.1", port))
    sender.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    receivers = [Receiver(port, sc.frames, sc.size) for _ in range(sc.receivers)]
    for r in receivers:
        r.start()
    warm = build_header("bench/warmup/0", 0, STAMP.size) + STAMP.pack(-1, 0)
    deadline = time.monotonic() + 10
    while not all(r.warm.is_set() for r in receivers):  # a server may register connections late
        if time.monotonic() > deadline:
            raise RuntimeError("receivers never got the warm-up frame")
        sender.sendall(warm)
        time.sleep(0.05)
    frame = bytearray(build_header("bench/pointcloud/0", 0, sc.size) + bytes(sc.size))
    start = time.monotonic_ns()
    for seq in range(sc.frames):
        if sc.fps:
            delay = start / 1e9 + seq / sc.fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        if sc.window is not None:
            behind = seq - sc.window
            with Receiver.progress:
                Receiver.progress.wait_for(lambda b=behind: min(r.latest for r in receivers) >= b, 5)
        STAMP.pack_into(frame, HEADER_SIZE, seq, time.monotonic_ns())
        sender.sendall(frame)
    for r in receivers:
        r.join(30)
    sender.close()
    return receivers, start


def measure(kind: str, sc: Scenario, pin: bool) -> Result:
    server = Server(kind, pin, sc.worker_flags)
    peak, done = [server.ps.memory_info().rss], threading.Event()

    def sample_rss() -> None:
        while not done.wait(0.01):
            peak.append(server.ps.memory_info().rss)

    sampler = threading.Thread(target=sample_rss, daemon=True)
    try:
        cpu0 = server.cpu()
        sampler.start()
        receivers, start = run_load(server.port, sc)
        cpu = server.cpu() - cpu0
        done.set()
        stats = server.stats()
    finally:
        done.set()
        server.stop()
    total = sum(len(r.seen) for r in receivers)
    nbytes = sum(r.bytes for r in receivers)
    wall = (max(r.last_ns for r in receivers) - start) / 1e9 if total else float("nan")
    lat = sorted(x for r in receivers for x in r.latency_ns)
    errors = [e for r in receivers for e in r.errors]
    errors += [f"out of order at {r.seen.index(b)}" for r in receivers
               for a, b in zip(r.seen, r.seen[1:], strict=False) if b <= a][:3]
    added = (None, None)
    drops = None
    if stats:
        added = (stats["latency_ms"]["p50_ms"], stats["latency_ms"]["p99_ms"])
        drops = stats["drops_total"]
    return Result(
        delivered=total / (sc.frames * sc.receivers),
        egress_mb_s=nbytes / wall / 1e6,
        e2e_ms=(pct(lat, 0.5), pct(lat, 0.99)),
        added_ms=added, cpu_s=cpu, wall_s=wall, gb=nbytes / 1e9, drops=drops, errors=errors,
        rss_growth_mb=(max(peak) - peak[0]) / 1e6,
    )


def pct(values: list[int], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] / 1e6 if values else float("nan")


# -- report ------------------------------------------------------------------------------------


def fmt(v: float | int | None, spec: str = ".2f") -> str:
    return "n/a" if v is None else format(v, spec)


def tables(rows: list[tuple[Scenario, Result, Result]]) -> str:
    out = ["| scenario | server | delivered | egress MB/s | e2e p50 / p99 ms | added p50 / p99 ms "
           "| CPU s | CPU s/GB | peak RSS +MB | drops |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for sc, worker, base in rows:
        for name, r in (("worker", worker), ("baseline", base)):
            added = f"{fmt(r.added_ms[0])} / {fmt(r.added_ms[1])}"
            out.append(f"| {sc.name} | {name} | {r.delivered:.2%} | {r.egress_mb_s:,.0f} | "
                       f"{r.e2e_ms[0]:.2f} / {r.e2e_ms[1]:.2f} | {added} | {r.cpu_s:.2f} | "
                       f"{r.cpu_per_gb:.2f} | {r.rss_growth_mb:.0f} | {fmt(r.drops, 'd')} |")
    out += ["", "| scenario | egress worker/baseline | CPU per GB worker/baseline "
            "| e2e p99 worker - baseline ms |", "|---|---:|---:|---:|"]
    for sc, worker, base in rows:
        out.append(f"| {sc.name} | {worker.egress_mb_s / base.egress_mb_s:.2f} | "
                   f"{worker.cpu_per_gb / base.cpu_per_gb:.2f} | {worker.e2e_ms[1] - base.e2e_ms[1]:+.2f} |")
    return "\n".join([*out, "", *targets(rows)])


def targets(rows: list[tuple[Scenario, Result, Result]]) -> list[str]:
    """The performance targets, judged on the rows where receivers keep up (paced senders)."""
    kept_up = [(sc, w, b) for sc, w, b in rows if sc.window is not None or sc.fps]
    checks = []
    if kept_up:
        loss = min(w.delivered for _, w, _ in kept_up)
        checks.append(("zero loss for receivers that keep up (paced rows)", f"{loss:.2%} delivered",
                       loss == 1))
        worst = max(kept_up, key=lambda row: row[1].cpu_per_gb / row[2].cpu_per_gb)
        ratio = worst[1].cpu_per_gb / worst[2].cpu_per_gb
        checks.append(("CPU per GB within 1.5x of the baseline (paced rows)",
                       f"worst {ratio:.2f} ({worst[0].name})", ratio <= 1.5))
    for sc, w, _ in rows:
        if sc.window is not None and sc.size == MB:
            checks.append((f"egress >= 1 GB/s ({sc.name})", f"{w.egress_mb_s:,.0f} MB/s",
                           w.egress_mb_s >= 1000))
        if sc.fps and w.added_ms[1] is not None:
            checks.append((f"added latency p99 < 5 ms ({sc.name})", f"{w.added_ms[1]:.2f} ms",
                           w.added_ms[1] < 5))
    return ["| target | measured | met |", "|---|---:|---|",
            *(f"| {name} | {value} | {'yes' if ok else '**no**'} |" for name, value, ok in checks)]


def environment(pin: bool) -> str:
    import uvloop

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{os.cpu_count()} x {cpu}, Python {platform.python_version()}, uvloop {uvloop.__version__}, "
            f"loopback, {'server pinned to CPU 0, load generator to CPU 1' if pin else 'no pinning'}, "
            f"load average at start {load:.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a tenth of the frames (smoke run)")
    ap.add_argument("--write", action="store_true", help=f"write {OUT.relative_to(REPO)}")
    ap.add_argument("--pin", action="store_true",
                    help="pin the server to CPU 0 and this process to CPU 1 (hurts on a shared machine)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per server and scenario (median by egress)")
    ap.add_argument("--only", help="run scenarios whose name contains this text")
    ap.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_baseline:
        serve_baseline(args.serve_baseline)
        return 0
    if args.pin and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    env = environment(args.pin)
    rows = []
    for sc in (s.scaled(args.quick) for s in SCENARIOS if not args.only or args.only in s.name):
        runs: dict[str, list[Result]] = {"worker": [], "baseline": []}
        for _ in range(args.repeat):  # interleaved, so drifting machine load hits both alike
            for kind in runs:
                runs[kind].append(measure(kind, sc, args.pin))
        worker, base = (median_run(runs[k]) for k in ("worker", "baseline"))
        rows.append((sc, worker, base))
        print(f"{sc.name}: worker {worker.egress_mb_s:,.0f} MB/s {worker.delivered:.2%}, "
              f"baseline {base.egress_mb_s:,.0f} MB/s {base.delivered:.2%}", file=sys.stderr, flush=True)
        for r in runs["worker"] + runs["baseline"]:
            for e in r.errors[:3]:
                print(f"  error: {e}", file=sys.stderr)
    report = tables(rows)
    cmd = "python bench/tcp_bench.py" + (" --quick" if args.quick else "") + (" --pin" if args.pin else "")
    print(f"{env}\n\n{report}")
    if args.write:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(render(cmd + " --write", env, report, args.repeat))
    return 0


def median_run(results: list[Result]) -> Result:
    """Each metric's median over the runs, except delivery: the worst run, so a loss is never hidden."""
    med = statistics.median
    added = [r.added_ms for r in results if None not in r.added_ms]
    drops = [r.drops for r in results if r.drops is not None]
    return Result(
        delivered=min(r.delivered for r in results),
        egress_mb_s=med([r.egress_mb_s for r in results]),
        e2e_ms=(med([r.e2e_ms[0] for r in results]), med([r.e2e_ms[1] for r in results])),
        added_ms=(med([a[0] for a in added]), med([a[1] for a in added])) if added else (None, None),
        cpu_s=med([r.cpu_s for r in results]), wall_s=med([r.wall_s for r in results]),
        gb=med([r.gb for r in results]), rss_growth_mb=med([r.rss_growth_mb for r in results]),
        drops=max(drops) if drops else None, errors=[e for r in results for e in r.errors],
        cpu_per_gb_runs=[r.cpu_per_gb for r in results],
    )


def render(cmd: str, env: str, report: str, repeat: int) -> str:
    return f"""## TCP reflector (`workers.tcp`)

Command: `{cmd}` ({repeat} interleaved runs per server and scenario; each figure is the median
over the runs, except "delivered", which is the worst run, and "drops", the most in any run).
Environment: {env}. The worker runs with its default settings unless the row says otherwise.

Baseline: a bare uvloop forwarder (in bench/tcp_bench.py) that writes every chunk it reads to every
other connection, without framing, validation, queues or counters: the least work any Python
reflector can do. The load generator is the bench process (one sender thread, one thread per
receiver); every receiver checks each frame's header, length and sequence number.

- Delivered = frames received / (frames sent x receivers). Egress = bytes received by all
  receivers / (last byte received - first send). e2e = from just before the sender's sendall() to
  the receiver holding the frame's last byte. Added = the worker's own /stats figure: from the
  frame's last byte read to the return of the write that handed it to a receiver's transport
  (so it includes that kernel copy, and any time the frame waited in the receiver's queue).
  CPU = CPU time of all the server's threads during the scenario (from /proc schedstat).
- Paced rows: "30 fps" is paced by the clock; in the "burst" rows the sender sends back to back but
  waits whenever it is more than {WINDOW} frames ahead of the slowest receiver (below the worker's
  10-frame queue), so every receiver keeps up. The targets are judged on these rows.
- Open-loop rows: the sender never waits. The three receiver threads share one process (and the
  two cores with the sender and the server), so they fall behind a sender that is not
  rate-limited. The worker then keeps each receiver's backlog bounded (10 frames per stream, the
  oldest dropped: see peak RSS) where the baseline buffers without limit (its RSS grows with the
  burst). The last row gives the worker a 3000-frame queue: it then loses nothing either, and its
  "added" latency is mostly time spent queued.
- The machine is shared with other work: in repeated A/B runs of the same build the CPU-per-GB
  ratios moved by up to about 0.3, so differences below about 1.3x are within noise.

{report}
"""


# -- the baseline: a bare forwarder ------------------------------------------------------------


def serve_baseline(port: int) -> None:
    import uvloop

    peers: list[asyncio.Transport] = []

    class Forward(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t = transport
            peers.append(transport)  # type: ignore[arg-type]

        def data_received(self, data: bytes) -> None:
            for peer in peers:
                if peer is not self.t:
                    peer.write(data)

        def connection_lost(self, exc: Exception | None) -> None:
            peers.remove(self.t)  # type: ignore[arg-type]

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(Forward, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    uvloop.run(serve())


if __name__ == "__main__":
    sys.exit(main())
