"""Worker processes as process groups: start, stop, and reap what a previous orchestrator left behind.

Every worker leads its own process group, so one signal reaches the helpers it spawns. A worker dies with
the orchestrator even on SIGKILL (PR_SET_PDEATHSIG on Linux); whatever still survives (a helper of a
worker, or a worker on a system without that prctl) is found at the next start from the pid files, which
record pid + create_time so that a pid reused by an unrelated process is never signalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import psutil

log = logging.getLogger("orchestrator.streams")

#: Pid files of workers end in this, so that other pid files sharing run_dir are never touched.
PIDFILE_SUFFIX = ".worker.pid"
_PR_SET_PDEATHSIG = 1
_prctl = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError, AttributeError):
        _prctl = ctypes.CDLL(None, use_errno=True).prctl


def _child_setup(parent_pid: int) -> Callable[[], None]:
    """Runs in the child between fork and exec: die with the parent, even if it already died."""
    def setup() -> None:
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:
            os._exit(1)
    return setup


async def spawn(argv: Sequence[str], *, env: Mapping[str, str],
                cwd: str | None) -> asyncio.subprocess.Process:
    """Start a worker in a new session (so a new process group), output on pipes, no stdin."""
    return await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=dict(env), cwd=cwd, start_new_session=True,
        preexec_fn=_child_setup(os.getpid()))


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_members(pgid: int) -> list[psutil.Process]:
    """Live (non-zombie) processes of a process group."""
    found = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (OSError, psutil.Error):
            continue
    return found


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return bool(group_members(pgid))


async def stop_group(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the group (and SIGCONT, so a stopped worker can act on it), SIGKILL after `grace`.

    Returns only when the leader has been reaped and no other member of its group is alive, so the
    worker's ports are free again.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    pgid = proc.pid
    if proc.returncode is None:
        _killpg(pgid, signal.SIGTERM)
        _killpg(pgid, signal.SIGCONT)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            _killpg(pgid, signal.SIGKILL)
            await proc.wait()
    if not _group_exists(pgid):
        return
    _killpg(pgid, signal.SIGTERM)
    _killpg(pgid, signal.SIGCONT)
    while _group_exists(pgid) and loop.time() < deadline:  # noqa: ASYNC110 - no event for "group empty"
        await asyncio.sleep(0.05)
    _killpg(pgid, signal.SIGKILL)
    for _ in range(40):
        if not _group_exists(pgid):
            return
        await asyncio.sleep(0.05)
    log.error("process group %d survives SIGKILL", pgid)


def _create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def write_pidfile(path: Path, pid: int, name: str, argv: Sequence[str]) -> None:
    """Record a worker so that a later orchestrator can find it if this one dies without stopping it."""
    record = {"pid": pid, "pgid": pid, "create_time": _create_time(pid), "name": name, "argv": list(argv),
              "owner_pid": os.getpid(), "owner_create_time": _create_time(os.getpid())}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record), encoding="utf-8")
    os.replace(tmp, path)


def _same_process(pid: int, create_time: float | None) -> bool:
    ct = _create_time(pid)
    return ct is not None and create_time is not None and abs(ct - create_time) < 0.05


def _orphans_of(record: dict) -> list[psutil.Process]:
    """The live processes a pid file's worker left: its group, unless the pid now belongs to someone else.

    Linux never hands out a pid that is still some group's id, so while any member of the worker's group
    is alive the group id cannot belong to a newer process; a live process on that pid with another
    create_time therefore means the group is gone.
    """
    pid, pgid, ct = int(record["pid"]), int(record["pgid"]), record["create_time"]
    if psutil.pid_exists(pid) and not _same_process(pid, ct):
        return []
    members = group_members(pgid)
    return [p for p in members if ct is None or p.create_time() >= float(ct) - 0.05]


def reap_orphans(run_dir: Path, grace: float) -> list[int]:
    """Stop the workers (and their helpers) that a previous orchestrator run left running; their pids.

    Pid files of a still-running orchestrator (another instance sharing run_dir) are left alone.
    """
    victims: list[psutil.Process] = []
    for f in sorted(run_dir.glob(f"*{PIDFILE_SUFFIX}")):
        try:
            record = json.loads(f.read_text(encoding="utf-8"))
            owner = int(record["owner_pid"]), record["owner_create_time"]
            found = _orphans_of(record)
        except (OSError, ValueError, KeyError, TypeError, psutil.Error) as e:
            log.warning("ignoring unreadable pid file %s (%s)", f, e)
            f.unlink(missing_ok=True)
            continue
        if owner[0] != os.getpid() and _same_process(*owner):
            log.warning("pid file %s belongs to orchestrator pid %d, still running: left alone", f, owner[0])
            continue
        if found:
            log.warning("stopping orphaned worker %s of a previous run: pids %s", record.get("name"),
                        [p.pid for p in found])
        victims.extend(found)
        f.unlink(missing_ok=True)
    _terminate_all(victims, grace)
    return [p.pid for p in victims]


def _terminate_all(procs: list[psutil.Process], grace: float) -> None:
    """SIGTERM (+SIGCONT), wait up to grace, SIGKILL; zombies count as gone (init may reap them late)."""
    def alive() -> list[psutil.Process]:
        out = []
        for p in procs:
            with contextlib.suppress(psutil.Error):
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
        return out

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        for p in alive():
            with contextlib.suppress(psutil.Error):
                p.send_signal(sig)
                if sig == signal.SIGTERM:
                    p.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + wait
        while alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not alive():
            return
    log.error("orphaned workers survive SIGKILL: %s", [p.pid for p in alive()])
