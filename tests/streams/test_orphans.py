"""Nothing outlives the orchestrator: parent-death signal, and pid-file reaping at the next start."""

import asyncio
import json
import os
import subprocess
import sys

import psutil
import pytest

from orchestrator.streams import procs

DASH = {"url_gen": "http://{public_host}:{port}/{session_id}/{user_id}/"}


@pytest.fixture
async def host(h):
    """host(config, run_dir) → (process, worker pids): a Supervisor in a process of its own."""
    started = []

    async def run(config, run_dir):
        proc = await asyncio.create_subprocess_exec(h.python, str(h.HERE / "host_supervisor.py"), str(config),
                                                    str(run_dir), stdout=asyncio.subprocess.PIPE)
        started.append(proc)
        return proc, json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))

    yield run
    for proc in started:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_workers_die_with_a_sigkilled_orchestrator(h, write_config, tmp_path, host):
    config = write_config({"dash": h.fake_entry(h.free_ports(1), urls=DASH)})
    proc, pids = await host(config, tmp_path / "run")
    assert len(pids) == 1 and h.alive(pids[0])
    proc.kill()
    await proc.wait()
    assert await h.await_exit(pids[0], 10)


async def test_orphans_of_a_sigkilled_orchestrator_are_stopped_at_next_start(h, write_config, tmp_path, host,
                                                                             supervisor):
    ports = h.free_ports(1)
    config = write_config({"dash": h.fake_entry(ports, "--clear-pdeathsig", "--spawn-child", urls=DASH)})
    proc, pids = await host(config, tmp_path / "run")
    orphans = [p.pid for p in procs.group_members(pids[0])]
    assert len(orphans) == 2  # the worker and its helper
    proc.kill()
    await proc.wait()
    assert all(h.alive(pid) for pid in orphans)  # they survived their orchestrator...

    sup = await supervisor(config, run_dir=tmp_path / "run")
    assert sorted(sup.reaped) == sorted(orphans)  # ...until the next one started
    assert all(not h.alive(pid) for pid in orphans)
    assert not list((tmp_path / "run").glob("*.tmp"))
    assert await sup.wait_until(lambda: [w["port"] for w in sup.snapshot()["workers"]
                                         if w["state"] == "RUNNING"] == ports, 15)  # and the port is usable


def _pidfile(run_dir, name, pid, create_time, owner_pid, owner_create_time):
    run_dir.mkdir(exist_ok=True)
    path = run_dir / f"{name}.worker.pid"
    path.write_text(json.dumps({"pid": pid, "pgid": pid, "create_time": create_time, "name": name, "argv": [],
                                "owner_pid": owner_pid, "owner_create_time": owner_create_time}))
    return path


@pytest.fixture
def bystanders():
    """Unrelated live processes (own process groups) that reaping must not touch."""
    made = []

    def make():
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
        made.append(p)
        return p.pid, psutil.Process(p.pid).create_time()

    yield make
    for p in made:
        p.kill()
        p.wait()


def test_a_reused_pid_is_never_signalled(tmp_path, h, bystanders):
    pid, created = bystanders()
    path = _pidfile(tmp_path / "run", "dash-1", pid, created - 1000, pid, created - 1000)
    assert procs.reap_orphans(tmp_path / "run", 0.5) == []
    assert h.alive(pid) and not path.exists()


def test_pid_files_of_a_running_orchestrator_are_left_alone(tmp_path, h, bystanders):
    pid, created = bystanders()
    owner, owner_created = bystanders()
    path = _pidfile(tmp_path / "run", "dash-1", pid, created, owner, owner_created)
    assert procs.reap_orphans(tmp_path / "run", 0.5) == []
    assert h.alive(pid) and path.exists()


def test_unreadable_pid_files_are_dropped(tmp_path):
    (tmp_path / "x.worker.pid").write_text("{not json")
    (tmp_path / "orchestrator.pid").write_text(str(os.getpid()))  # someone else's: not even read
    assert procs.reap_orphans(tmp_path, 0.5) == []
    assert not (tmp_path / "x.worker.pid").exists() and (tmp_path / "orchestrator.pid").exists()
