"""Counters of what the server did, read by DumpData and the metrics endpoint at scrape time.

Plain integers and Counters bumped inline: cheaper on the hot path than metric objects, and the
metrics collector turns them into Prometheus families only when scraped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class Stats:
    connections_total: int = 0
    commands: Counter[tuple[str, int]] = field(default_factory=Counter)  # (command, error code)
    events_in: Counter[str] = field(default_factory=Counter)
    events_out: Counter[str] = field(default_factory=Counter)
    bytes_in: int = 0
    data_frames_in: int = 0
    data_frames_out: int = 0
    data_bytes_out: int = 0
    data_dropped: Counter[str] = field(default_factory=Counter)  # reason -> frames
    rejected: Counter[str] = field(default_factory=Counter)  # reason -> inputs dropped or refused
