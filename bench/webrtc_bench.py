"""WebRTC SFU benchmark: forwarded packets/s and MB/s per core, end-to-end latency, 2 and 4 peers.

Each configuration runs twice in the same invocation: through the SFU (aiortc test peers, ICE,
DTLS-SRTP) and through a baseline forwarder that runs the SFU's own forwarding code over plain
UDP. Ratios against that baseline say what the WebRTC stack costs on this (noisy) machine.
Every peer is its own process; the forwarder's CPU time is read with psutil.

    .venv/bin/python bench/webrtc_bench.py --peers 2 4 --rate-mbps 25 --duration 5 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_json(url: str, predicate, timeout: float) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        try:
            data = json.loads(urllib.request.urlopen(url, timeout=1).read())
            if predicate(data):
                return data
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(url)
        time.sleep(0.05)


def start_forwarder(mode: str, npeers: int, workdir: str) -> tuple[subprocess.Popen, list[str]]:
    """Start the SFU or the baseline; return it and the per-peer peer.py arguments."""
    if mode == "udp":
        proc = subprocess.Popen(
            [PY, str(ROOT / "bench/webrtc/udp_forwarder.py"), "--peers", str(npeers)],
            stdout=subprocess.PIPE,
            text=True,
        )
        ports = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        return proc, [f"--target=127.0.0.1:{p}" for p in ports]
    port = free_port()
    settings = Path(workdir) / "sfu.yaml"
    gso = "false" if mode == "webrtc-nogso" else "true"
    settings.write_text(f"ice_addresses: [127.0.0.1]\nlog_summary_interval: 60\nudp_gso: {gso}\n")
    proc = subprocess.Popen(
        [
            PY,
            "-m",
            "workers.webrtc",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--settings",
            str(settings),
            "--log-level",
            "WARNING",
        ],
        cwd=ROOT,
    )
    wait_json(f"http://127.0.0.1:{port}/healthz", lambda d: d["status"] == "ok", 10)
    return proc, [f"--url=http://127.0.0.1:{port}"] * npeers


def machine_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, to report how loaded the shared machine was."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(fields) - fields[3] - fields[4], sum(fields)


def start_profiler(pid: int, args: argparse.Namespace) -> subprocess.Popen:
    """py-spy (not a project dependency: ``pip install py-spy`` into the venv to profile)."""
    raw = f"{args.profile}.{pid}.raw"
    cmd = ["py-spy", "record", "-p", str(pid), "-f", "raw", "-o", raw, "-r", "200", "--nonblocking"]
    return subprocess.Popen(
        [*cmd, "-d", str(int(args.duration))], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def profile_summary(pattern: str, top: int = 12) -> str:
    """Share of samples per function (self time), over all raw profiles written by this run."""
    own: dict[str, int] = {}
    total = 0
    for path in Path(pattern).parent.glob(Path(pattern).name + ".*.raw"):
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack:
                continue
            frame = stack.split(";")[-1]
            name = frame.split(" (")[0] + " (" + frame.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1] + ")"
            own[name] = own.get(name, 0) + int(count)
            total += int(count)
    rows = sorted(own.items(), key=lambda kv: -kv[1])[:top]
    return "\n".join(
        ["| share of SFU samples | function (self time) |", "|---|---|"]
        + [f"| {n / total:.1%} | `{name}` |" for name, n in rows]
    )


def prioritise(forwarder: psutil.Process) -> None:
    """Let the forwarder under test preempt the load generators (and other users of the machine)."""
    forwarder.nice(-5)


def cpu_pressure() -> float:
    """Share of the last 10 s in which some task waited for a CPU (Linux PSI)."""
    try:
        return float(Path("/proc/pressure/cpu").read_text().split()[1].split("=")[1])
    except (OSError, IndexError, ValueError):
        return 0.0


def wait_for_calm(threshold: float, patience: float) -> float:
    """On a shared machine, wait (bounded) until other users leave some CPU; return the pressure."""
    deadline = time.monotonic() + patience
    while (pressure := cpu_pressure()) > threshold and time.monotonic() < deadline:
        time.sleep(1)
    return pressure


def run_case(mode: str, npeers: int, args: argparse.Namespace) -> dict:
    pressure = wait_for_calm(args.calm, args.patience)
    with tempfile.TemporaryDirectory() as workdir:
        fwd, targets = start_forwarder(mode, npeers, workdir)
        peers = []
        try:
            for i in range(npeers):
                peers.append(
                    subprocess.Popen(
                        [
                            PY,
                            str(ROOT / "bench/webrtc/peer.py"),
                            "--mode",
                            "udp" if mode == "udp" else "webrtc",
                            targets[i],
                            "--client-id",
                            str(i + 1),
                            "--rate-mbps",
                            str(args.rate_mbps),
                            "--frame-bytes",
                            str(args.frame_bytes),
                            "--duration",
                            str(args.duration),
                        ],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                )
            for p in peers:
                if p.stdout.readline().strip() != "READY":  # type: ignore[union-attr]
                    raise RuntimeError("peer failed to start")
            if mode != "udp":
                url = targets[0].split("=", 1)[1] + "/stats"
                wait_json(
                    url,
                    lambda d: (
                        d["peers"] == npeers
                        and all(
                            x["signaling"] == "stable"
                            and x["connection"] == "connected"
                            and x["offers"] == x["answers"]
                            and x["outputs"] == 2 * (npeers - 1)
                            for x in d["peer_list"]
                        )
                    ),
                    20,
                )
            proc = psutil.Process(fwd.pid)
            if args.prioritise:
                prioritise(proc)
            spy = start_profiler(fwd.pid, args) if mode != "udp" and args.profile else None
            cpu0, t0, m0 = proc.cpu_times(), time.monotonic(), machine_cpu()
            for p in peers:
                p.stdin.write("GO\n")  # type: ignore[union-attr]
                p.stdin.flush()  # type: ignore[union-attr]
            results = [json.loads(p.stdout.readline()) for p in peers]  # type: ignore[union-attr]
            cpu1, wall, m1 = proc.cpu_times(), time.monotonic() - t0, machine_cpu()
            if spy is not None:
                spy.wait(30)
            for p in peers:
                p.wait(10)
        finally:
            for p in [*peers, fwd]:
                if p.poll() is None:
                    p.terminate()
                    p.wait(5)
    cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    received = sum(r["received"] for r in results)
    sent = sum(r["sent"] for r in results)
    nbytes = sum(r["bytes"] for r in results)
    lat = [r["latencies_ms"] for r in results if r["latencies_ms"]]
    headers: dict[str, int] = {}
    for r in results:
        for k, v in r["header_lengths"].items():
            headers[k] = headers.get(k, 0) + v
    return {
        "mode": mode,
        "peers": npeers,
        "offered_mbps_per_peer": args.rate_mbps,
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_util": cpu / wall,
        "forwarded_pkts": received,
        "expected_pkts": sent * (npeers - 1),
        "loss": 1 - received / max(1, sent * (npeers - 1)),
        "pps": received / args.duration,
        "mbps_out": nbytes * 8 / args.duration / 1e6,
        "pps_per_core": received / cpu if cpu else 0.0,
        "mb_per_core_s": nbytes / 1e6 / cpu if cpu else 0.0,
        "p50_ms": statistics.median(x["p50"] for x in lat) if lat else None,
        "p99_ms": max(x["p99"] for x in lat) if lat else None,
        "header_lengths": headers,
        "peer_cpu_s": sum(r["cpu_s"] for r in results),
        "machine_busy": (m1[0] - m0[0]) / max(1, m1[1] - m0[1]),
        "cpu_pressure_before": pressure,
    }


def srtp_cost_us(n: int = 20000) -> float:
    """aiortc's SRTP (pylibsrtp, the profile aiortc negotiates first) protect+unprotect per 1192 B packet."""
    from pylibsrtp import Policy, Session

    key = os.urandom(28)
    prof = Policy.SRTP_PROFILE_AEAD_AES_128_GCM
    tx = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=prof))
    rx_policy = Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=prof)
    rx_policy.window_size = 1024
    rx = Session(rx_policy)
    body = os.urandom(1172)
    t0 = time.perf_counter()
    for i in range(n):
        rx.unprotect(tx.protect(bytes([0x90, 5]) + (i & 0xFFFF).to_bytes(2, "big") + bytes(16) + body))
    return (time.perf_counter() - t0) / n * 1e6


PATH_NAMES = {"udp": "baseline UDP", "webrtc": "SFU (aiortc)", "webrtc-nogso": "SFU, no GSO"}


def table(rows: list[dict], srtp_us: float) -> str:
    out = [
        "| peers | path | run | Mbit/s in per peer | forwarded pkt/s | out MB/s | forwarder CPU (1 core) "
        "| pkt/s per core | MB/s per core | loss | p50 ms | p99 ms | machine busy | CPU pressure before "
        "| 20-byte headers |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        hdr = "all" if set(r["header_lengths"]) <= {"20"} else json.dumps(r["header_lengths"])
        out.append(
            f"| {r['peers']} | {PATH_NAMES[r['mode']]} | {r['run']} "
            f"| {r['offered_mbps_per_peer']:.0f} | {r['pps']:.0f} | {r['mbps_out'] / 8:.1f} "
            f"| {r['cpu_util']:.0%} "
            f"| {r['pps_per_core']:.0f} | {r['mb_per_core_s']:.1f} | {r['loss']:.2%} | {r['p50_ms']:.1f} "
            f"| {r['p99_ms']:.1f} | {r['machine_busy']:.0%} | {r['cpu_pressure_before']:.0f}% | {hdr} |"
        )
    out += [
        "",
        "| peers | path | CPU per forwarded packet vs baseline (median) | p50 ms path / baseline (median) "
        "| p99 ms path / baseline (median) |",
        "|---|---|---|---|---|",
    ]

    def med(rs: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in rs)

    for n in sorted({r["peers"] for r in rows}):
        base = [r for r in rows if r["peers"] == n and r["mode"] == "udp"]
        for mode in ("webrtc", "webrtc-nogso"):
            sfu = [r for r in rows if r["peers"] == n and r["mode"] == mode]
            if sfu and base:
                ratio = statistics.median(
                    b["pps_per_core"] / s["pps_per_core"] for s, b in zip(sfu, base, strict=True)
                )
                out.append(
                    f"| {n} | {PATH_NAMES[mode]} | {ratio:.2f}x | {med(sfu, 'p50_ms'):.1f} / "
                    f"{med(base, 'p50_ms'):.1f} | {med(sfu, 'p99_ms'):.1f} / {med(base, 'p99_ms'):.1f} |"
                )
    out.append("")
    out.append(f"aiortc's SRTP alone (AES-128-GCM protect + unprotect, 1192-byte packet): {srtp_us:.1f} us")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peers", type=int, nargs="+", default=[2, 4])
    p.add_argument("--rate-mbps", type=float, default=25.0, help="point-cloud rate each peer sends")
    p.add_argument("--frame-bytes", type=int, default=100_000)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--repeat", type=int, default=3, help="runs per configuration (the machine is noisy)")
    p.add_argument("--prioritise", action="store_true", help="run the forwarder at nice -5 (needs root)")
    p.add_argument("--paths", nargs="+", default=["udp", "webrtc"], choices=["udp", "webrtc", "webrtc-nogso"])
    p.add_argument(
        "--calm", type=float, default=30.0, help="wait for CPU pressure (PSI avg10, %%) below this"
    )
    p.add_argument("--patience", type=float, default=60.0, help="longest wait for --calm, seconds")
    p.add_argument("--profile", metavar="PREFIX", help="py-spy the SFU during its runs, summary printed")
    p.add_argument("--json", help="also write raw results here")
    args = p.parse_args()
    rows = []
    for n in args.peers:
        for run in range(1, args.repeat + 1):
            for mode in args.paths:  # alternate, so all paths see the same background load
                rows.append({**run_case(mode, n, args), "run": run})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(table(rows, srtp_cost_us()))
    if args.profile:
        print()
        print(profile_summary(args.profile))


if __name__ == "__main__":
    main()
