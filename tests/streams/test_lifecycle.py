"""Supervisor lifecycle against real worker processes (the stand-in fakeworker.py)."""

import asyncio
import logging
import os
import signal
import subprocess
import time

import pytest

from orchestrator.streams import procs
from orchestrator.streams.supervisor import NoWorkerAvailable


def workers(sup, **match):
    return [w for w in sup.snapshot()["workers"] if all(w[k] == v for k, v in match.items())]


async def running(sup, n, timeout=15.0):
    ok = await sup.wait_until(lambda: len(workers(sup, state="RUNNING")) >= n, timeout)
    assert ok, sup.snapshot()["workers"]


async def test_warm_worker_serves_one_session_then_is_recycled(h, write_config, supervisor):
    ports = h.free_ports(2)
    sup = await supervisor(write_config({"tcpreflector": h.fake_entry(ports)}))
    await running(sup, 1)
    first = workers(sup)[0]
    assert first["port"] == ports[0] and first["sessions"] == {}

    placed = await sup.acquire("s1", "tcpreflector")
    assert (placed.worker, placed.port) == (first["name"], ports[0])
    assert sup.sfu_data("s1", "u1", "example.org") == {"url_gen": f"tcp://example.org:{ports[0]}",
                                                        "url_audio": "", "url_pcc": ""}
    await running(sup, 2)  # a new warm instance on the second port
    second = await sup.acquire("s2", "tcpreflector")
    assert second.port == ports[1]
    with pytest.raises(NoWorkerAvailable):
        await sup.acquire("s3", "tcpreflector")
    assert sup.snapshot()["placements"][-1]["worker"] is None

    await sup.release("s1")
    assert await sup.wait_until(lambda: not h.alive(first["pid"]) and len(workers(sup, port=ports[0],
                                                                                 state="RUNNING")) == 1, 15)
    fresh = workers(sup, port=ports[0])[0]
    assert fresh["pid"] != first["pid"] and fresh["sessions"] == {}
    assert sup.sfu_data("s1", "u1", "example.org")["url_gen"] == ""


async def test_kill9_restarts_with_backoff_and_reports_sessions(h, write_config, supervisor, caplog):
    caplog.set_level(logging.INFO, "orchestrator.streams")
    replaced = asyncio.Queue()
    sup = await supervisor(write_config({"webrtc": h.fake_entry(h.free_ports(1),
                                         urls={"url_gen": "http://{public_host}:{port}/"})}),
                           on_replaced=replaced.put_nowait)
    placed = await sup.acquire("s1", "webrtc")
    old = workers(sup)[0]
    sup.update_load("s1", 3)
    os.kill(old["pid"], signal.SIGKILL)
    assert await asyncio.wait_for(replaced.get(), 15) == ["s1"]
    new = workers(sup)[0]
    assert new["state"] == "RUNNING" and new["pid"] != old["pid"] and new["restarts"] == 1
    assert new["port"] == placed.port and new["sessions"] == {"s1": 3} and new["last_exit"] == -9
    assert "RUNNING -> BACKOFF: killed by signal 9; restart 1 in" in caplog.text


async def test_sigstopped_worker_is_detected_and_replaced(h, write_config, supervisor):
    replaced = asyncio.Queue()
    sup = await supervisor(write_config({"tcpreflector": h.fake_entry(h.free_ports(1))}),
                           on_replaced=replaced.put_nowait)
    await sup.acquire("s1", "tcpreflector")
    old = workers(sup)[0]["pid"]
    os.kill(old, signal.SIGSTOP)
    assert await asyncio.wait_for(replaced.get(), 15) == ["s1"]
    assert not h.alive(old)
    assert workers(sup)[0]["pid"] != old


async def test_unanswered_health_checks_restart_the_worker(h, write_config, supervisor):
    replaced = asyncio.Queue()
    sup = await supervisor(write_config({"dash": h.fake_entry(
        h.free_ports(1), "--unhealthy-after", "0.5",
        urls={"url_gen": "http://{public_host}:{port}/{session_id}/{user_id}/"})}),
        on_replaced=replaced.put_nowait)
    await sup.acquire("s1", "dash")
    assert await asyncio.wait_for(replaced.get(), 15) == ["s1"]
    assert workers(sup)[0]["restarts"] >= 1


async def test_crash_loop_goes_fatal_and_sessions_are_rejected(h, write_config, supervisor):
    sup = await supervisor(write_config({"tcpreflector": h.fake_entry(
        h.free_ports(1), "--exit-at-start", "1", restart={"max_restarts": 2})}))
    assert await sup.wait_until(lambda: workers(sup, state="FATAL"), 15)
    w = workers(sup)[0]
    assert w["restarts"] == 2 and "crash loop" in w["reason"] and w["pid"] is None
    assert not sup.ready()
    with pytest.raises(NoWorkerAvailable):
        await sup.acquire("s1", "tcpreflector")


async def test_configuration_exit_code_is_fatal_without_retries(h, write_config, supervisor):
    entry = h.fake_entry(h.free_ports(1), "--exit-at-start", "2")
    sup = await supervisor(write_config({"tcpreflector": entry}))
    assert await sup.wait_until(lambda: workers(sup, state="FATAL"), 15)
    assert workers(sup)[0]["restarts"] == 0 and workers(sup)[0]["last_exit"] == 2


async def test_sessions_of_a_failed_worker_move_to_another(h, write_config, supervisor):
    replaced = asyncio.Queue()
    ports = h.free_ports(2)
    sup = await supervisor(write_config({"tcpreflector": h.fake_entry(ports, restart={"max_restarts": 0})}),
                           on_replaced=replaced.put_nowait)
    await sup.acquire("s1", "tcpreflector")
    os.kill(workers(sup, port=ports[0])[0]["pid"], signal.SIGKILL)
    assert await asyncio.wait_for(replaced.get(), 15) == ["s1"]
    assert sup.placement_of("s1").port == ports[1]
    assert sup.sfu_data("s1", "u", "h")["url_gen"] == f"tcp://h:{ports[1]}"
    assert workers(sup, port=ports[0])[0]["state"] == "FATAL"


async def test_operator_restart_keeps_sessions_and_revives_a_fatal_worker(h, write_config, supervisor):
    replaced = asyncio.Queue()
    port = h.free_ports(1)
    sup = await supervisor(write_config({"tcpreflector": h.fake_entry(port, control=True,
                                                                      restart={"max_restarts": 0})}),
                           on_replaced=replaced.put_nowait)
    await sup.acquire("s1", "tcpreflector")
    old = workers(sup)[0]
    assert await sup.restart_worker(old["name"])
    assert await asyncio.wait_for(replaced.get(), 15) == ["s1"]
    new = workers(sup)[0]
    assert new["pid"] != old["pid"] and not h.alive(old["pid"]) and new["sessions"] == {"s1": 0}

    os.kill(new["pid"], signal.SIGKILL)  # max_restarts 0: FATAL, and no other port to move s1 to
    assert await asyncio.wait_for(replaced.get(), 15) == ["s1"]
    assert workers(sup)[0]["state"] == "FATAL" and sup.placement_of("s1") is None
    assert sup.sfu_data("s1", "u", "h")["url_gen"] == ""
    assert await sup.restart_worker(old["name"])
    await running(sup, 1)
    assert not await sup.restart_worker("tcpreflector-1")


async def test_stop_leaves_no_process(h, write_config, supervisor):
    sup = await supervisor(write_config({
        "tcpreflector": h.fake_entry(h.free_ports(1), "--spawn-child", "--ignore-sigterm"),
        "dash": h.fake_entry(h.free_ports(1), "--spawn-child",
                             urls={"url_gen": "http://{public_host}:{port}/{session_id}/{user_id}/"})}))
    await running(sup, 2)
    groups = [w["pid"] for w in workers(sup)]
    members = [p for g in groups for p in procs.group_members(g)]
    assert len(members) == 4  # two workers, each with a helper in its group
    await sup.stop(0.5)
    assert all(not procs.group_members(g) for g in groups)
    assert not h.our_workers()
    assert all(not h.alive(p.pid) for p in members)
    assert workers(sup) == []


def test_usage_counts_a_workers_helpers_and_sees_it_stopped(h):
    from orchestrator.streams.health import Usage

    code = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'while True: pass']);"
            "print('ready', flush=True); time.sleep(60)")
    proc = subprocess.Popen([h.python, "-c", code], stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout.readline() == b"ready\n"
        usage = Usage(proc.pid)
        usage.sample()
        time.sleep(0.5)  # CPU time has to accrue: there is no event for it
        cpu, rss, stopped = usage.sample()
        assert cpu > 5 and rss > 10_000_000 and not stopped  # the busy helper counts for its worker
        os.kill(proc.pid, signal.SIGSTOP)
        assert os.WIFSTOPPED(os.waitpid(proc.pid, os.WUNTRACED)[1])
        assert usage.sample()[2]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
