"""Choosing the worker a new session goes to. Pure functions, no I/O.

The old orchestrator's comparator compared a worker with itself and so always returned the first
one; here the choice is an explicit minimum over a load key, first index on ties.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Metric = Literal["users", "sessions", "cpu"]
#: CPU differences below this many percent of one core are measurement noise, not load.
CPU_STEP = 5.0


@dataclass(frozen=True)
class Candidate:
    """What placement knows about one worker instance."""

    state: str
    sessions: int
    capacity: int  # sessions_per_worker; 0 = unlimited
    users: int = 0
    cpu: float = 0.0


def has_room(sessions: int, capacity: int) -> bool:
    return capacity == 0 or sessions < capacity


def least_loaded(loads: Sequence) -> int | None:
    """Index of the smallest load (any comparable values), the first one on ties; None when empty."""
    best: int | None = None
    for i, load in enumerate(loads):
        if best is None or load < loads[best]:
            best = i
    return best


def load_key(c: Candidate, metric: Metric = "users") -> tuple[float, ...]:
    """The configured metric first, the other measurements as tie-breakers."""
    cpu = float(int(c.cpu // CPU_STEP))
    return {"users": (c.users, c.sessions, cpu),
            "sessions": (c.sessions, c.users, cpu),
            "cpu": (cpu, c.users, c.sessions)}[metric]


def choose(candidates: Sequence[Candidate], metric: Metric = "users") -> int | None:
    """Index of the least-loaded RUNNING candidate with room for one more session, or None."""
    eligible = [i for i, c in enumerate(candidates)
                if c.state == "RUNNING" and has_room(c.sessions, c.capacity)]
    best = least_loaded([load_key(candidates[i], metric) for i in eligible])
    return None if best is None else eligible[best]
