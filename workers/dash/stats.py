"""Counters exposed on /stats and summarised in the log; plain attributes keep the hot path cheap."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Stats:
    requests: int = 0
    bytes_in: int = 0  # payload bytes stored from uploads
    bytes_out: int = 0  # payload bytes written to readers
    chunks_in: int = 0
    chunks_out: int = 0
    evictions: int = 0  # completed resources dropped to stay under max_total_bytes
    expired: int = 0  # resources dropped by the idle TTL
    not_found: int = 0  # 404 answers (after the long-poll ran out)
    aborted_uploads: int = 0  # writer vanished, timed out or hit a limit mid-body
    drops: Counter[str] = field(default_factory=Counter)  # connections/requests refused, by reason

    def counters(self) -> dict[str, object]:
        out: dict[str, object] = {k: v for k, v in vars(self).items() if k != "drops"}
        out["drops"] = dict(self.drops)
        return out
