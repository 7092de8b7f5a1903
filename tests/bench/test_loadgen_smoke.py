"""The messaging benchmark still runs end to end: a real `orchestrator serve` and the bare relay,
each on a free port, ten clients for two seconds. A smoke test of the tooling, not a performance
test: it checks that the report is well-formed and that data flowed, never how fast."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KEYS = {"target", "clients", "sent", "expected", "delivered", "dropped", "data_ms", "probe_command_ms",
        "probe_message_ms", "server_cpu_pct", "server_rss_max_mb", "generator_cpu_pct", "error_count"}


@pytest.fixture
def bench_run():
    """Runs bench/messaging.py; on teardown a still-running benchmark gets SIGTERM (it then stops
    its servers and generators), and SIGKILL if it does not exit."""
    procs: list[subprocess.Popen] = []

    def run(*args: str, timeout: float = 18.0) -> tuple[int, str]:
        proc = subprocess.Popen([sys.executable, "bench/messaging.py", *args], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(proc)
        output, _ = proc.communicate(timeout=timeout)
        return proc.returncode, output

    yield run
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.timeout(20)
def test_ten_clients_against_orchestrator_and_relay(bench_run, tmp_path):
    report, table, again = tmp_path / "rows.json", tmp_path / "table.md", tmp_path / "again.md"
    status, output = bench_run("--clients", "10", "--duration", "2", "--warmup", "0", "--drain", "0.5",
                               "--probe-interval", "0.05", "--log-dir", str(tmp_path), "--json", str(report),
                               "--out", str(table))
    assert status == 0, output
    rows = json.loads(report.read_text())["rows"]
    assert [r["target"] for r in rows] == ["bare relay", "orchestrator"]
    for row in rows:
        assert row.keys() >= KEYS
        assert row["clients_connected"] == 10 and row["error_count"] == 0, row["errors"]
        assert 0 < row["delivered"] <= row["expected"] and row["sent"] > 0
        assert min(row["data_ms"]["n"], row["probe_command_ms"]["n"], row["probe_message_ms"]["n"]) > 0
    markdown = table.read_text()
    assert "| 10 | bare relay |" in markdown and "| 10 | orchestrator |" in markdown
    assert "## Orchestrator / bare relay" in markdown
    assert bench_run("--from-json", str(report), "--out", str(again))[0] == 0
    assert again.read_text() == markdown


@pytest.mark.timeout(20)
def test_direct_relay_baseline_forwards_and_is_named(bench_run, tmp_path):
    """`--relay-direct`: the relay takes SendData from uvicorn's parser and writes frames itself."""
    report, table = tmp_path / "rows.json", tmp_path / "table.md"
    status, output = bench_run("--clients", "10", "--duration", "2", "--warmup", "0", "--drain", "0.5",
                               "--probe-interval", "0.05", "--log-dir", str(tmp_path), "--json", str(report),
                               "--out", str(table), "--relay-direct")
    assert status == 0, output
    doc = json.loads(report.read_text())
    assert doc["settings"]["relay"] == "direct"
    relay = next(r for r in doc["rows"] if r["target"] == "bare relay")
    assert relay["error_count"] == 0 and 0 < relay["delivered"] <= relay["expected"]
    assert "bare_relay.py --direct" in table.read_text()
