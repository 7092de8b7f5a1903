"""Server settings: one dataclass, filled from command-line options and ORCHESTRATOR_* variables.

Every limit the server enforces is a field here with its default, so that operators find them
all in one place (`orchestrator serve --help` lists them).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

MiB = 1024 * 1024


@dataclass(slots=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 8090
    log_level: str = "info"
    log_format: str = "text"  # text | json
    config: Path = Path("config/streams.yaml")
    # Largest Engine.IO message accepted; Unity frames reach 1,000,008 bytes.
    max_http_buffer_size: int = 16 * MiB
    cors_origins: list[str] = field(default_factory=lambda: ["*"])
    ping_interval_s: float = 25.0
    ping_timeout_s: float = 20.0
    # Operator calls: a token, or (when none is set) peers in these networks only.
    operator_token: str = ""
    trusted_networks: list[str] = field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    ntp_servers: list[str] = field(default_factory=lambda: ["pool.ntp.org", "time.google.com", "localtime"])
    ntp_timeout_s: float = 1.0
    ntp_refresh_s: float = 300.0
    # Per-recipient budget for data frames (SendData) waiting to be written; older ones are dropped.
    data_queue_frames: int = 64
    data_queue_bytes: int = 32 * MiB
    # A data frame still waiting this long for a recipient is dropped when the next one comes: late
    # media is useless, and under overload this turns growing queues into drops.
    data_max_age_s: float = 1.0
    # A recipient whose whole outgoing queue exceeds this is disconnected (it is not reading at all).
    max_outgoing_bytes: int = 128 * MiB
    max_message_bytes: int = 1 * MiB  # SendMessage / SendMessageToAll payload, JSON-encoded
    max_user_data_bytes: int = 256 * 1024
    max_name_length: int = 256
    # Floods: every limit answers with a documented code (acked) or a counted drop (no ack).
    max_connections: int = 10_000
    max_sessions: int = 1_000
    max_users_per_session: int = 64
    command_rate: float = 50.0  # commands and non-data events per second per connection
    command_burst: int = 200
    data_rate_bytes: float = 128 * MiB  # SendData bytes per second per connection
    data_burst_bytes: int = 128 * MiB
    # This many refused inputs within abuse_window_s disconnects the client, with a logged reason.
    abuse_limit: int = 1_000
    abuse_window_s: float = 10.0
    # Shared state: "memory" (one process) or redis://HOST:PORT/DB (several processes as one).
    state: str = "memory"
    node_heartbeat_s: float = 1.0
    node_timeout_s: float = 5.0  # a process silent this long is gone: its users are removed
    run_dir: Path = Path("run")
    log_dir: Path | None = None
    drain_grace_s: float = 30.0

    def trusted(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(n, strict=False) for n in self.trusted_networks]
