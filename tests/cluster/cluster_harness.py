"""Real processes for the cluster tests: a redis-server, `orchestrator serve --state redis://...`
processes on free loopback ports, and small helpers to wait for them."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator_process import ROOT, free_port, http_get
from orchestrator_process import Server as Node

HEARTBEAT_S = 0.25
TIMEOUT_S = 2.0
_databases = itertools.count(1)  # db 0 stays unused: every cluster gets a database of its own


@dataclass
class Redis:
    proc: subprocess.Popen[bytes]
    port: int
    workdir: Path

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def new_db(self) -> str:
        return self.url(next(_databases))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def start_redis(workdir: Path, port: int | None = None) -> Redis:
    """redis-server without persistence; waits until it answers PING."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise FileNotFoundError("redis-server")
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = open(workdir / f"redis-{port}.log", "ab")  # noqa: SIM115 (the process keeps it)
    argv = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(workdir), "--databases", "256"]
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return Redis(proc, port, workdir)
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def node_argv(tmp: Path, port: int, state: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--config", str(tmp / "absent-streams.yaml"), "--run-dir", str(tmp / "run"),
            "--state", state, "--node-heartbeat-s", str(HEARTBEAT_S), "--node-timeout-s", str(TIMEOUT_S),
            "--drain-grace-s", "0", *args]


def spawn_node(tmp: Path, state: str, *args: str) -> Node:
    port = free_port()
    log_path = tmp / f"orchestrator-{port}.log"
    env = {**os.environ, "ORCHESTRATOR_NTP_SERVERS": "localtime"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(node_argv(tmp, port, state, *args), cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    return Node(proc, port, log_path)


def wait_ready(node: Node, timeout_s: float = 30) -> Node:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if node.proc.poll() is not None:
            raise RuntimeError(f"orchestrator exited {node.proc.returncode}:\n{node.log()}")
        if http_get(f"{node.url}/readyz")[0] == 200:
            return node
        time.sleep(0.05)  # no event tells when another process starts listening
    node.stop()
    raise RuntimeError(f"orchestrator not ready:\n{node.log()}")


