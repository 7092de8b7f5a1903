"""Several orchestrator processes acting as one orchestrator, on Redis (`--state redis://...`).

Each process keeps a full replica of the Model and applies one shared, totally ordered log of
operations (ops.py) in order (node.py); reads are answered from the local replica, and a client
reads its own writes because a command is acknowledged only after its process applied it.
Data frames bypass the log: they are relayed process to process over pub/sub (relay.py).
Redis holds the log, periodic snapshots of the model, heartbeats, and nothing else (store.py).

Failures. A process silent for node_timeout_s is declared down by exactly one survivor (a Lua
script removes it and appends `node_down`): its users leave as if they had disconnected. A
process that loses Redis reports not ready, answers state changes with 5012, keeps relaying data
between its own clients and answering reads, and reconnects with backoff; it then continues from
the last entry it applied if the log is intact, loads the newest snapshot if it is not, or, when
Redis came back empty, the first process to reconnect seeds it with its replica (the others load
that). Users whose connection ended meanwhile are then logged out.

Stream workers. The process that creates a session owns its worker. The creator is the session's
administrator and stays on that process; the session closes when the administrator logs out or
disconnects, or when that process is declared down, so the owner outlives every session it serves
and ownership never moves. Every process renders sfuData from the session's worker description;
when the owner restarts or replaces a worker, the new description goes through the log
(`set_worker`) and every process tells its own members (STREAM_WORKER_CHANGED).
"""

from __future__ import annotations

from ..settings import Settings
from ..streams_port import ClusterPort, ClusterUnavailable
from .node import RedisCluster

__all__ = ["ClusterUnavailable", "RedisCluster", "cluster_for"]


def cluster_for(settings: Settings) -> ClusterPort:
    """The cluster for `--state`; an unusable value fails at start-up with a one-line error."""
    return RedisCluster(settings)
