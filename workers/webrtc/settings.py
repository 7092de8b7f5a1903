"""Settings of the WebRTC SFU worker: one validated model, loaded from YAML/JSON and flags.

Every limit the worker enforces is a field here, with its default documented in README.md.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class SettingsError(ValueError):
    """A settings problem, reported as one line naming the key (exit code 2)."""


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    max_peers: int = Field(32, ge=1, le=4096)
    max_tiles: int = Field(16, ge=1, le=256)
    max_qualities: int = Field(8, ge=1, le=64)
    max_video_tracks: int = Field(64, ge=1, le=4096)
    max_client_id: int = Field(65535, ge=1, le=2**31 - 1)
    max_message_bytes: int = Field(262144, ge=1024, le=16 * 2**20)
    max_pending_candidates: int = Field(32, ge=1, le=1024)
    max_quality_entries: int = Field(64, ge=1, le=4096)
    max_frame_bytes: int = Field(64 * 2**20, ge=1, le=2**32 - 1)
    answer_timeout: float = Field(10.0, gt=0, le=600)
    connect_timeout: float = Field(30.0, gt=0, le=600)
    udp_ports: str | None = None
    public_ip: str | None = None
    ice_addresses: list[str] | None = None
    stun_servers: list[str] = Field(default_factory=list)
    socket_buffer_bytes: int = Field(4 * 2**20, ge=0, le=2**30)
    send_backlog_bytes: int = Field(2**20, ge=0, le=2**30)
    udp_gso: bool = True
    log_summary_interval: float = Field(5.0, gt=0, le=3600)
    uvloop: bool = True

    @field_validator("udp_ports")
    @classmethod
    def _ports(cls, value: str | None) -> str | None:
        if value is not None:
            parse_port_range(value)
        return value

    @field_validator("public_ip")
    @classmethod
    def _public_ip(cls, value: str | None) -> str | None:
        if value is not None:
            ipaddress.ip_address(value)
        return value

    @field_validator("ice_addresses")
    @classmethod
    def _addresses(cls, value: list[str] | None) -> list[str] | None:
        for address in value or []:
            ipaddress.ip_address(address)
        return value

    @field_validator("stun_servers")
    @classmethod
    def _stun(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("stun:", "turn:", "turns:")):
                raise ValueError(f"{url!r} is not a stun:/turn: URL")
        return value

    def port_range(self) -> tuple[int, int] | None:
        return parse_port_range(self.udp_ports) if self.udp_ports else None


def parse_port_range(text: str) -> tuple[int, int]:
    low_s, sep, high_s = text.partition(":")
    if not sep or not low_s.isdigit() or not high_s.isdigit():
        raise ValueError(f"{text!r} is not MIN:MAX")
    low, high = int(low_s), int(high_s)
    if not 1 <= low <= high <= 65535:
        raise ValueError(f"{text!r} is not a port range within 1..65535 with MIN <= MAX")
    return low, high


def load(path: str | None, overrides: dict[str, Any]) -> Settings:
    """Settings from an optional YAML/JSON file, then flag overrides; SettingsError on any problem."""
    data: dict[str, Any] = {}
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise SettingsError(f"settings file {path}: {exc.strerror}") from None
        try:
            loaded = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise SettingsError(f"settings file {path}: not valid YAML/JSON ({exc})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise SettingsError(f"settings file {path}: top level must be a mapping")
        data.update(loaded or {})
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "settings"
        raise SettingsError(f"setting {key}: {err['msg']}") from None
