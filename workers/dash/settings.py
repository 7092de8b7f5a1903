"""Relay settings: one frozen dataclass, loaded from a YAML/JSON mapping and validated up front.

Validation happens once at start-up so that a typo in streams.yaml stops the worker with exit code 2
and one line naming the key, instead of surfacing later as odd behaviour under load.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MiB = 1024 * 1024


class SettingsError(ValueError):
    """A settings file that cannot be used; the message names the key and the problem."""


@dataclass(frozen=True)
class Settings:
    """Every limit of the relay; the defaults are documented in workers/dash/README.md."""

    long_poll_ms: int = 1000
    max_resource_bytes: int = 128 * MiB
    max_total_bytes: int = 1024 * MiB
    idle_ttl_s: float = 60.0
    max_connections: int = 1024
    max_header_bytes: int = 16384
    max_headers: int = 100
    header_timeout_s: float = 10.0
    keepalive_timeout_s: float = 60.0
    upload_idle_timeout_s: float = 30.0
    reader_buffer_bytes: int = 1 * MiB
    reader_stall_timeout_s: float = 10.0
    token: str | None = None
    session_tokens: dict[str, str] = field(default_factory=dict)

    @property
    def auth_enabled(self) -> bool:
        return self.token is not None or bool(self.session_tokens)


# Lower bounds per numeric key; a value below is rejected (0 allowed only where it means "off").
_MINIMUM: dict[str, float] = {
    "long_poll_ms": 0,
    "max_resource_bytes": 1,
    "max_total_bytes": 1,
    "idle_ttl_s": 0.001,
    "max_connections": 1,
    "max_header_bytes": 256,
    "max_headers": 1,
    "header_timeout_s": 0.001,
    "keepalive_timeout_s": 0.001,
    "upload_idle_timeout_s": 0.001,
    "reader_buffer_bytes": 1024,
    "reader_stall_timeout_s": 0.001,
}


def _check(name: str, value: Any, kind: type) -> Any:
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"{name}: expected an integer, got {type(value).__name__}")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SettingsError(f"{name}: expected a number, got {type(value).__name__}")
        value = float(value)
    if name in _MINIMUM and value < _MINIMUM[name]:
        raise SettingsError(f"{name}: must be >= {_MINIMUM[name]}, got {value}")
    return value


def _check_token(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise SettingsError(f"{name}: expected a non-empty string")
    return value


def from_mapping(data: Any) -> Settings:
    """Build Settings from a parsed mapping; unknown keys and wrong types raise SettingsError."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SettingsError(f"settings: expected a mapping at top level, got {type(data).__name__}")
    kinds = {f.name: f.type for f in dataclasses.fields(Settings)}
    values: dict[str, Any] = {}
    for name, value in data.items():
        if name not in kinds:
            raise SettingsError(f"{name}: unknown key")
        if name == "token":
            values[name] = None if value is None else _check_token(name, value)
        elif name == "session_tokens":
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise SettingsError("session_tokens: expected a mapping of session id to token")
            for sid, tok in value.items():
                if not isinstance(sid, str) or not sid or "/" in sid:
                    raise SettingsError(f"session_tokens: invalid session id {sid!r}")
                _check_token(f"session_tokens.{sid}", tok)
            values[name] = dict(value)
        else:
            values[name] = _check(name, value, int if kinds[name] == "int" else float)
    settings = Settings(**values)
    if settings.max_total_bytes < settings.max_resource_bytes:
        raise SettingsError("max_total_bytes: must be >= max_resource_bytes")
    return settings


def load(path: str | Path | None) -> Settings:
    """Read a YAML or JSON file (JSON is valid YAML); no file means all defaults."""
    if path is None:
        return Settings()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"settings: cannot read {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "syntax error"
        raise SettingsError(f"settings: {path} is not valid YAML/JSON: {first}") from None
    return from_mapping(data)
