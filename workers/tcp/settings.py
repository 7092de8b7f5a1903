"""Reflector settings: every limit the worker enforces, with its default, validated once at start.

The supervisor writes the ``settings:`` block of config/streams.yaml to a YAML or JSON file; each
key can also be given as a flag (``queue.frames`` → ``--queue-frames``). Unknown keys and wrong
types are start-up errors naming the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workers.tcp.framing import MAX_LENGTH

MiB = 1024 * 1024


class SettingsError(ValueError):
    """A settings problem, worded as the single stderr line the worker exits with."""


def _opt(default: Any, lo: float | None = None, hi: float | None = None, choices: tuple = (), doc: str = ""):
    return field(default=default, metadata={"lo": lo, "hi": hi, "choices": choices, "doc": doc})


@dataclass(frozen=True)
class QueueSettings:
    frames: int = _opt(10, 1, 1_000_000, doc="frames queued per subscriber and stream")
    bytes: int = _opt(64 * MiB, 1, 2**40, doc="bytes queued per subscriber and stream")
    drop: str = _opt("oldest", choices=("oldest", "newest"), doc="which frame a full queue drops")
    streams: int = _opt(64, 1, 100_000, doc="streams with a backlog per subscriber")


@dataclass(frozen=True)
class Settings:
    max_frame_bytes: int = _opt(64 * MiB, 0, MAX_LENGTH, doc="largest payload a header may announce")
    max_connections: int = _opt(64, 1, 100_000, doc="client connections at once; more are closed")
    header_timeout_s: float = _opt(10.0, 0, doc="a started header must complete within this; 0 = off")
    idle_timeout_s: float = _opt(300.0, 0, doc="close a connection without traffic this long; 0 = off")
    lag_disconnect_s: float = _opt(10.0, 0, doc="close a subscriber that accepts nothing this long; 0 = off")
    priority_streams: tuple[str, ...] = _opt(("*/audio/*",), doc="stream-name globs served first")
    write_buffer_high: int = _opt(2 * MiB, 1, 2**40, doc="transport buffer that pauses a subscriber")
    write_buffer_low: int = _opt(512 * 1024, 0, 2**40, doc="transport buffer that resumes it")
    summary_interval_s: float = _opt(5.0, 0.1, doc="how often drop/close summaries are logged")
    queue: QueueSettings = field(default_factory=QueueSettings)

    def __post_init__(self) -> None:
        if self.write_buffer_low > self.write_buffer_high:
            raise SettingsError("settings: write_buffer_low must not exceed write_buffer_high")


def _coerce(key: str, f: dataclasses.Field, value: Any) -> Any:
    """Check one value against its field's type and bounds; the error names the dotted key."""
    meta, kind = f.metadata, f.type
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        out: Any = value
    elif kind == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        out = float(value)
    elif kind == "str" and isinstance(value, str):
        out = value
    elif kind == "tuple[str, ...]" and isinstance(value, list) and all(isinstance(v, str) for v in value):
        out = tuple(value)
    else:
        raise SettingsError(f"settings: {key} must be {_describe(kind)}, got {value!r}")
    if meta["choices"] and out not in meta["choices"]:
        raise SettingsError(f"settings: {key} must be one of {', '.join(meta['choices'])}, got {out!r}")
    lo, hi = meta["lo"], meta["hi"]
    if (lo is not None and out < lo) or (hi is not None and out > hi):
        bounds = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise SettingsError(f"settings: {key} must be {bounds}, got {out!r}")
    return out


def _describe(kind: str) -> str:
    return {"int": "an integer", "float": "a number", "str": "a string"}.get(kind, "a list of strings")


def _build(cls: type, data: Any, prefix: str = "") -> Any:
    if not isinstance(data, Mapping):
        raise SettingsError(f"settings: {prefix.rstrip('.') or 'the file'} must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        f = fields.get(key)
        if f is None:
            raise SettingsError(f"settings: unknown key '{prefix}{key!s}'")
        nested = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        kwargs[key] = _build(nested, value, f"{prefix}{key}.") if nested else _coerce(prefix + key, f, value)
    return cls(**kwargs)


def settings_from_mapping(data: Mapping[str, Any]) -> Settings:
    return _build(Settings, data)


def read_settings_file(path: str) -> dict[str, Any]:
    """Parse a YAML or JSON settings file (an empty file means all defaults)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"settings: cannot read {path}: {exc.strerror}") from None
    try:
        if path.endswith(".json"):
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except ValueError as exc:  # json.JSONDecodeError and yaml.YAMLError's parsers both land here
        raise SettingsError(f"settings: {path} is not valid: {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # yaml.YAMLError does not derive from ValueError
        raise SettingsError(f"settings: {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    return {} if data is None else data


def flag_specs() -> list[tuple[str, str, str]]:
    """(dotted key, --flag, help) for every setting, so the CLI cannot drift from the dataclasses."""
    specs = []
    for cls, prefix in ((Settings, ""), (QueueSettings, "queue.")):
        for f in dataclasses.fields(cls):
            if f.name == "queue":
                continue
            key = prefix + f.name
            default = ",".join(f.default) if isinstance(f.default, tuple) else f.default
            specs.append((key, "--" + key.replace(".", "-").replace("_", "-"),
                          f"{f.metadata['doc']} (default: {default})".replace("%", "%%")))
    return specs


def parse_flag(key: str, text: str) -> Any:
    """Turn a flag's text into the setting's type; the result is validated like a file value."""
    cls, name = (QueueSettings, key[6:]) if key.startswith("queue.") else (Settings, key)
    kind = next(f.type for f in dataclasses.fields(cls) if f.name == name)
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
    except ValueError:
        raise SettingsError(f"settings: {key} must be {_describe(kind)}, got {text!r}") from None
    if kind == "tuple[str, ...]":
        return [p for p in text.split(",") if p]
    return text


def load_settings(path: str | None, overrides: Mapping[str, Any]) -> Settings:
    """File values first, then flags (dotted keys) on top; validated as one mapping."""
    data = read_settings_file(path) if path else {}
    if not isinstance(data, Mapping):
        raise SettingsError(f"settings: {path} must hold a mapping, got {type(data).__name__}")
    merged: dict[str, Any] = dict(data)
    for key, value in overrides.items():
        if key.startswith("queue."):
            queue = merged.get("queue") or {}
            if not isinstance(queue, Mapping):
                raise SettingsError(f"settings: queue must be a mapping, got {queue!r}")
            merged["queue"] = {**queue, key[6:]: value}
        else:
            merged[key] = value
    return settings_from_mapping(merged)

