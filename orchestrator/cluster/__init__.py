"""Several orchestrator processes acting as one orchestrator, on Redis (`--state redis://...`).

Each process keeps a full replica of the Model and applies one shared, totally ordered log of
operations (ops.py) in order (node.py); reads are answered from the local replica, and a client
reads its own writes because a command is acknowledged only after its process applied it.
Data frames bypass the log: they are relayed process to process over pub/sub (relay.py).
Redis holds the log, periodic snapshots of the model, heartbeats, and nothing else (store.py).
"""

from __future__ import annotations

from ..settings import Settings
from ..streams_port import ClusterPort, ClusterUnavailable
from .node import RedisCluster

__all__ = ["ClusterUnavailable", "RedisCluster", "cluster_for"]


def cluster_for(settings: Settings) -> ClusterPort:
    """The cluster for `--state`; an unusable value fails at start-up with a one-line error."""
    return RedisCluster(settings)
