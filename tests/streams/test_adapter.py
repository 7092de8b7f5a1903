"""The supervisor behind the server's StreamsPort: built from Settings, SIGHUP reload, start-up errors."""

import asyncio
import logging
import os
import signal

import psutil
import pytest

from orchestrator.settings import Settings
from orchestrator.streams.adapter import supervisor_for
from orchestrator.streams_port import WorkerUnavailable


async def test_adapter_serves_sessions_and_reloads_on_sighup(h, tmp_path, write_config):
    ports = h.free_ports(2)
    path = write_config({"tcpreflector": h.fake_entry(ports, control=True)})
    adapter = supervisor_for(Settings(config=path, run_dir=tmp_path / "run", log_dir=tmp_path / "logs"))
    replaced = asyncio.Queue()
    adapter.on_worker_replaced = replaced.put_nowait
    sup = adapter.supervisor
    await adapter.start()
    try:
        await adapter.acquire("s1", "tcpreflector")
        adapter.update_load("s1", 2)
        assert adapter.sfu_data("s1", "u", "::1")["url_gen"] == f"tcp://[::1]:{ports[0]}"
        assert [w["sessions"] for w in adapter.snapshot() if w["sessions"]] == [{"s1": 2}]
        assert list((tmp_path / "run" / "workers").glob("*.pid"))
        await adapter.acquire("s2", "tcpreflector")
        with pytest.raises(WorkerUnavailable):  # both ports taken
            await adapter.acquire("s3", "tcpreflector")
        await adapter.release("s2")

        busy = next(w["pid"] for w in adapter.snapshot() if w["sessions"].get("s1"))
        os.kill(busy, signal.SIGKILL)
        assert await asyncio.wait_for(replaced.get(), 15) == ["s1"]

        write_config({"tcpreflector": h.fake_entry(ports, "--log-lines", "2", control=True)})
        os.kill(os.getpid(), signal.SIGHUP)

        def reloaded():
            return any(w["state"] == "RUNNING" and "--log-lines" in psutil.Process(w["pid"]).cmdline()
                       for w in adapter.snapshot() if not w["sessions"])
        assert await sup.wait_until(reloaded, 15)
        assert adapter.unready_reasons() == []
        assert not await adapter.restart_worker("nonexistent")
    finally:
        await adapter.stop()
    assert adapter.snapshot() == [] and not h.our_workers()
    assert adapter.unready_reasons() == ["stream supervisor stopping"]
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL


def test_invalid_config_stops_start_up_with_its_errors(h, tmp_path, write_config, caplog):
    caplog.set_level(logging.ERROR, "orchestrator.streams")
    path = write_config({"dash": h.fake_entry(h.free_ports(1))})  # dash url without {user_id}
    with pytest.raises(SystemExit) as info:
        supervisor_for(Settings(config=path, run_dir=tmp_path))
    assert info.value.code == 2
    assert f"{path}: workers.dash.urls.url_gen: {{user_id}} required" in caplog.text


def test_missing_config_means_no_workers(tmp_path):
    assert supervisor_for(Settings(config=tmp_path / "none.yaml", run_dir=tmp_path)) is None
