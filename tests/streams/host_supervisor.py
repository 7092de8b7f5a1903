"""Runs a Supervisor in its own process (so a test can SIGKILL it): prints the workers' pids, then waits.

usage: host_supervisor.py CONFIG RUN_DIR
"""

import asyncio
import json
import sys
from pathlib import Path

from orchestrator.streams.config import load_config
from orchestrator.streams.supervisor import Supervisor


async def main() -> None:
    config = load_config(sys.argv[1])
    sup = Supervisor(config, log_dir=None, run_dir=Path(sys.argv[2]))
    await sup.start()
    want = sum(w.placement.warm for w in config.workers.values())
    await sup.wait_until(lambda: sum(w["state"] == "RUNNING" for w in sup.snapshot()["workers"]) >= want, 30)
    print(json.dumps([w["pid"] for w in sup.snapshot()["workers"]]), flush=True)
    await asyncio.Event().wait()


asyncio.run(main())
