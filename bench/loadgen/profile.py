"""Optional py-spy sampling of the server during the measured window (`--profile`).

Only samples of a thread holding the GIL are kept (`--gil`): the figures say where the server's
Python CPU time goes, not where it waits.
py-spy is a profiling tool, not a dependency: when it is not installed the rows simply carry no
profile. Sampling is non-blocking so the server is not paused while it is measured.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections import Counter
from pathlib import Path


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def record(pid: int, seconds: float, out: Path) -> asyncio.subprocess.Process | None:
    """Start sampling pid for the given seconds into a folded-stack file; None without py-spy."""
    tool = py_spy()
    if tool is None:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    return await asyncio.create_subprocess_exec(
        tool,
        "record",
        "--nonblocking",
        "--gil",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        "100",
        "--format",
        "raw",
        "--output",
        str(out),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


def top_frames(folded: Path, count: int = 15) -> dict:
    """Share of samples per frame where the time is spent itself, and per package of that frame.

    A frame reads `function (package/module.py:line)`; time in the event loop's own C code (uvloop
    callbacks and socket writes) shows up as the `Runner.run` frame.
    """
    own: Counter[str] = Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():  # a line py-spy left unfinished when it was stopped
            continue
        own[stack.rsplit(";", 1)[-1]] += int(n)
        total += int(n)
    if not total:
        return {}
    packages: Counter[str] = Counter()
    for frame, n in own.items():
        where = frame.rpartition("(")[2]
        packages[where.split("/", 1)[0] if "/" in where else where.partition(".py")[0]] += n
    return {
        "samples": total,
        "self": [(round(100 * n / total, 1), frame) for frame, n in own.most_common(count)],
        "packages": [(round(100 * n / total, 1), name) for name, n in packages.most_common(count)],
    }
