"""Fixtures for supervisor tests: configs for the stand-in worker, supervisors that are always stopped."""

import asyncio
import contextlib
import copy
import os
import signal
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
import yaml

from orchestrator.streams.config import load_config
from orchestrator.streams.supervisor import Supervisor

HERE = Path(__file__).parent
FAKE = str(HERE / "fakeworker.py")
#: Short timings so that restarts and failures happen within a test's budget.
FAST = {"restart": {"backoff": {"initial_s": 0.05, "factor": 2, "max_s": 0.2, "jitter": 0.1},
                    "max_restarts": 3, "window_s": 60, "stop_grace_s": 1},
        "health": {"startup_timeout_s": 15, "interval_s": 0.2, "timeout_s": 0.5, "unhealthy_after": 2}}


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def fake_entry(ports, *flags, control: bool = False, **keys) -> dict:
    """A workers: entry running the stand-in worker; keys override/extend the entry.

    control=True: health on a control port (as the tcp worker has), else on the main port.
    """
    if control:
        flags = ("--control-port", "{control_port}", *flags)
    entry = {"ports": list(ports), "urls": {"url_gen": "tcp://{public_host}:{port}"},
             "command": ["{python}", FAKE, "--host", "{host}", "--port", "{port}", *flags],
             "health": {"target": "control_port" if control else "port"}}
    for k, v in keys.items():
        entry[k] = {**entry.get(k, {}), **v} if isinstance(v, dict) and isinstance(entry.get(k), dict) else v
    return entry



@pytest.fixture
def write_config(tmp_path):
    def write(workers: dict, name: str = "streams.yaml", **top) -> Path:
        doc = {"version": 1, "bind_host": "127.0.0.1", "defaults": copy.deepcopy(FAST), "workers": workers,
               **top}
        path = tmp_path / name
        path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        return path
    return write


def _our_workers() -> list[psutil.Process]:
    """Worker processes started by this test process's supervisors, not by orchestrator servers that
    other tests' fixtures run as subprocesses (those have their own supervisors)."""
    others: set[int] = set()
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if any("orchestrator.cli" in a or a.endswith("/orchestrator") for a in child.cmdline()):
                others.update(p.pid for p in child.children(recursive=True))
    found = []
    for p in psutil.Process().children(recursive=True):
        if p.pid in others:
            continue
        with contextlib.suppress(psutil.Error):
            ours = any("fakeworker" in a or "workers." in a for a in p.cmdline())
            if ours and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
    return found


@pytest.fixture
async def supervisor(tmp_path):
    """make(config_path, **kwargs) → a started Supervisor; all are stopped, and nothing may survive them."""
    made: list[Supervisor] = []

    async def make(path: Path, *, run_dir: Path | None = None, log_dir: Path | None = None, on_replaced=None):
        sup = Supervisor(load_config(path), log_dir=log_dir, run_dir=run_dir or tmp_path / "run",
                         on_worker_replaced=on_replaced)
        made.append(sup)
        await sup.start()
        return sup

    yield make
    for sup in made:
        await sup.stop(1.0)
    left = _our_workers()
    described = []
    for p in left:
        with contextlib.suppress(psutil.Error):
            described.append(p.cmdline())
            os.killpg(os.getpgid(p.pid), signal.SIGKILL)
    assert not left, f"worker processes left running: {described}"


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


async def await_exit(pid: int, timeout: float) -> bool:
    """Wait for any process (not only a child) to exit, via a pidfd: no polling."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    loop = asyncio.get_running_loop()
    exited = loop.create_future()
    loop.add_reader(fd, lambda: exited.done() or exited.set_result(None))
    try:
        await asyncio.wait_for(exited, timeout)
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)
        os.close(fd)


SHIPPED = HERE.parents[1] / "config" / "streams.yaml"


def shipped_with_free_ports(tmp_path: Path, kinds=("tcpreflector", "webrtc", "dash"),
                            ports_each: int = 2) -> Path:
    """config/streams.yaml as shipped, on loopback and free ports (the only changes)."""
    doc = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    doc["bind_host"] = "127.0.0.1"
    doc["workers"] = {k: v for k, v in doc["workers"].items() if k in kinds}
    for entry in doc["workers"].values():
        entry["ports"] = free_ports(ports_each)
    if "webrtc" in doc["workers"]:
        doc["workers"]["webrtc"]["udp_ports"] = "41000-41019"
    path = tmp_path / "shipped.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


@pytest.fixture
def h() -> SimpleNamespace:
    """Helpers for tests (a fixture, since test modules cannot import this file)."""
    return SimpleNamespace(free_ports=free_ports, fake_entry=fake_entry, alive=alive, FAKE=FAKE, HERE=HERE,
                           python=sys.executable, our_workers=_our_workers,
                           await_exit=await_exit, shipped_with_free_ports=shipped_with_free_ports)
