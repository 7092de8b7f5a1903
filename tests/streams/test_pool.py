"""Pools and placement with real processes: sharing, slices, settings, reload, logs, no-worker cases."""

import json
import logging
from pathlib import Path

import psutil
import pytest

from orchestrator.streams.config import load_config
from orchestrator.streams.supervisor import NoWorkerAvailable, Supervisor

DASH = {"url_gen": "http://{public_host}:{port}/{session_id}/{user_id}/"}


def read_json(path: str):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def workers(sup, **match):
    return [w for w in sup.snapshot()["workers"] if all(w[k] == v for k, v in match.items())]


async def running(sup, n, timeout=15.0):
    assert await sup.wait_until(lambda: len(workers(sup, state="RUNNING")) >= n, timeout), workers(sup)


async def test_shared_workers_take_sessions_by_reported_users(h, write_config, supervisor):
    ports = h.free_ports(2)
    sup = await supervisor(write_config({"dash": h.fake_entry(ports, urls=DASH, placement={
        "sessions_per_worker": 0, "warm": 2})}))
    await running(sup, 2)
    assert (await sup.acquire("s1", "dash")).port == ports[0]  # tie: the first
    sup.update_load("s1", 5)
    assert (await sup.acquire("s2", "dash")).port == ports[1]
    sup.update_load("s2", 1)
    assert (await sup.acquire("s3", "dash")).port == ports[1]  # 1 user < 5 users
    sup.update_load("s3", 10)
    assert (await sup.acquire("s4", "dash")).port == ports[0]  # 5 < 11
    assert await sup.acquire("s4", "dash") == sup.placement_of("s4")  # idempotent
    snap = sup.snapshot()
    assert {w["port"]: w["users"] for w in snap["workers"]} == {ports[0]: 5, ports[1]: 11}
    last = snap["placements"][-1]
    assert last["session_id"] == "s4" and last["reason"].startswith("least loaded (users) of 2")
    assert [c["users"] for c in last["candidates"]] == [5, 11]
    with pytest.raises(ValueError):
        sup.update_load("s1", -1)
    pids = [w["pid"] for w in workers(sup)]
    for s in ("s1", "s4"):
        await sup.release(s)
    assert [w["pid"] for w in workers(sup)] == pids  # shared workers within `warm` stay
    assert sup.sfu_data("s2", "u", "h")["url_gen"] == f"http://h:{ports[1]}/s2/u/"
    assert sup.sfu_data("s2", "u", "evil.org/x?") == {"url_gen": "", "url_audio": "", "url_pcc": ""}
    assert sup.snapshot()["invalid_hosts"] == 1
    assert await sup.wait_until(lambda: all(w["stats"] == {"connections": 0} for w in workers(sup)), 10)


async def test_reloading_an_unchanged_file_restarts_nothing(h, write_config, supervisor):
    entry = h.fake_entry(h.free_ports(1), urls=DASH, host="127.0.0.1")
    path = write_config({"dash": entry}, bind_host="0.0.0.0")
    sup = await supervisor(path)
    await running(sup, 1)
    before = workers(sup)
    assert await sup.reload(path) == []
    assert [w["pid"] for w in workers(sup)] == [before[0]["pid"]] and not workers(sup)[0]["retiring"]


async def test_webrtc_slices_settings_file_and_configured_public_host(h, tmp_path, write_config, supervisor):
    ports = h.free_ports(2)
    entry = h.fake_entry(ports, "--udp-ports", "{udp_min}:{udp_max}", "--settings", "{settings_file}",
                         udp_ports="42000-42009", urls={"url_gen": "http://{public_host}:{port}/"},
                         settings={"max_peers": 3, "label": "{name}"}, placement={"warm": 2},
                         cwd="wd", env={"WORKER_MARK": "{kind}/{port}"})
    (tmp_path / "wd").mkdir()
    sup = await supervisor(write_config({"webrtc": entry}, public_host="vr.example.org"))
    await running(sup, 2)
    for w, span in zip(workers(sup), ("42000:42004", "42005:42009"), strict=True):
        proc = psutil.Process(w["pid"])
        assert proc.cwd() == str(tmp_path / "wd") and proc.environ()["WORKER_MARK"] == f"webrtc/{w['port']}"
        argv = proc.cmdline()
        assert argv[argv.index("--udp-ports") + 1] == span
        settings = read_json(argv[argv.index("--settings") + 1])
        assert settings == {"max_peers": 3, "label": w["name"]}
    await sup.acquire("s", "webrtc")
    assert sup.sfu_data("s", "u", "10.1.1.1:8090")["url_gen"] == f"http://vr.example.org:{ports[0]}/"


async def test_a_port_returns_to_the_pool_only_after_its_process_exited(h, write_config, supervisor):
    port = h.free_ports(1)
    entry = h.fake_entry(port, "--ignore-sigterm", control=True)
    sup = await supervisor(write_config({"tcpreflector": entry}))
    await sup.acquire("s1", "tcpreflector")
    old = workers(sup)[0]["pid"]
    await sup.release("s1")
    placed = await sup.acquire("s2", "tcpreflector")  # waits for the SIGKILL after stop_grace_s
    assert placed.port == port[0] and not h.alive(old)
    assert workers(sup, state="RUNNING")[0]["pid"] != old


async def test_reload_applies_to_new_sessions_and_keeps_running_ones(h, write_config, supervisor):
    ports = h.free_ports(2)
    sup = await supervisor(write_config({"tcpreflector": h.fake_entry(ports, control=True)}))
    await sup.acquire("s1", "tcpreflector")
    await running(sup, 2)
    busy = workers(sup, port=ports[0])[0]["pid"]

    bad = write_config({"tcpreflector": h.fake_entry(ports, control=True, colour="red")}, name="bad.yaml")
    errors = await sup.reload(bad)
    assert errors == [f"{bad}: workers.tcpreflector.colour: unknown key"]
    assert await sup.reload(bad.parent / "gone.yaml") != []

    entry = h.fake_entry(ports, "--log-lines", "1", control=True)
    new = write_config({"tcpreflector": entry}, name="new.yaml")
    assert await sup.reload(new) == []

    def idle_has_new_flag():
        idle = workers(sup, port=ports[1], state="RUNNING")
        return bool(idle) and "--log-lines" in psutil.Process(idle[0]["pid"]).cmdline()
    assert await sup.wait_until(idle_has_new_flag, 15)
    assert workers(sup, port=ports[0])[0]["pid"] == busy and h.alive(busy)  # the busy one keeps its config
    assert "--log-lines" not in psutil.Process(busy).cmdline()
    await sup.release("s1")
    assert await sup.wait_until(lambda: not h.alive(busy), 15)
    assert (await sup.acquire("s2", "tcpreflector")).port == ports[1]


async def test_protocols_without_worker_and_a_missing_config(h, tmp_path, write_config, supervisor, caplog):
    caplog.set_level(logging.WARNING, "orchestrator.streams")
    sup = Supervisor(load_config(tmp_path / "none.yaml"), run_dir=tmp_path / "run")
    await sup.start()
    try:
        assert "no stream worker config" in caplog.text
        for proto in ("socketio", "tcp", "tcpreflector", "dash", "nonsense"):
            assert await sup.acquire("s", proto) is None
        assert sup.sfu_data("s", "u", "host") == {"url_gen": "", "url_audio": "", "url_pcc": ""}
        assert sup.ready() and sup.snapshot()["config_missing"]
    finally:
        await sup.stop(1)
    only_dash = await supervisor(write_config({"dash": h.fake_entry(h.free_ports(1), urls=DASH)}))
    assert await only_dash.acquire("s", "webrtc") is None
    assert await only_dash.acquire("s", "socketio") is None


async def test_worker_output_goes_to_rotating_files_and_a_rate_limited_log(h, tmp_path, write_config,
                                                                         supervisor, caplog):
    caplog.set_level(logging.INFO, "orchestrator.worker")
    port = h.free_ports(1)[0]
    entry = h.fake_entry([port], "--log-lines", "400", urls=DASH,
                         log={"lines_per_s": 0.1, "burst": 5, "file_max_bytes": 4096, "file_backups": 2})
    sup = await supervisor(write_config({"dash": entry}), log_dir=tmp_path / "logs")
    await running(sup, 1)
    await sup.stop(1)
    files = sorted((tmp_path / "logs").glob(f"dash-{port}.log*"))
    assert [f.name for f in files] == [f"dash-{port}.log", f"dash-{port}.log.1", f"dash-{port}.log.2"]
    assert "INFO fakeworker: line 399" in files[0].read_text()
    shown = [r for r in caplog.records if r.name == f"orchestrator.worker.dash-{port}"]
    assert len(shown) <= 8
    assert any("not shown here" in r.getMessage() for r in shown)


async def test_unknown_session_release_and_placement_of_a_stopping_supervisor(h, write_config, supervisor):
    sup = await supervisor(write_config({"dash": h.fake_entry(h.free_ports(1), urls=DASH)}))
    await sup.release("nobody")
    sup.update_load("nobody", 3)
    await sup.stop(1)
    with pytest.raises(NoWorkerAvailable):
        await sup.acquire("late", "dash")
    assert not sup.ready()
