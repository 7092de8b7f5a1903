"""config/streams.yaml: schema, loading and validation.

The file is validated once, completely, before anything starts: every problem is reported at once as a
"file: key: problem" line, so an operator fixes a config in one pass (`orchestrator check-config`).
Each entry under `workers:` is keyed by the sessionProtocol it serves. Its sections restart/health/
placement/log are merged over `defaults:`, which are merged over per-kind defaults (dash sessions share a
relay, tcpreflector is health-checked on its control port). The file's comments document every key.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from . import placeholders
from .urls import URL_KEYS, normalize_host

log = logging.getLogger("orchestrator.streams")

KINDS = ("tcpreflector", "webrtc", "dash")
#: Kinds whose clients send no session id: one worker process (one port) per session, never shared.
PER_SESSION_KINDS = frozenset({"tcpreflector", "webrtc"})
_KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "tcpreflector": {"health": {"target": "control_port"}, "placement": {"sessions_per_worker": 1}},
    "webrtc": {"placement": {"sessions_per_worker": 1}},
    "dash": {"placement": {"sessions_per_worker": 0}},
}

#: Keys whose right value depends on the kind: only a worker entry may set them.
_PER_KIND_KEYS = (("health", "target"), ("placement", "sessions_per_worker"))


class ConfigError(Exception):
    """An invalid streams config; `errors` holds one "file: key: problem" line per problem."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = list(errors)


def _parse_ports(value: Any) -> tuple[int, ...]:
    """A port, "LOW-HIGH", or a list of those → the ports in order."""
    items = value if isinstance(value, list) else [value]
    ports: list[int] = []
    for item in items:
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", item) if isinstance(item, str) else None
        if isinstance(item, int) and not isinstance(item, bool):
            lo = hi = item
        elif m:
            lo, hi = int(m[1]), int(m[2] or m[1])
        else:
            raise ValueError(f"{item!r} is not a port or a range \"LOW-HIGH\"")
        if not 1 <= lo <= hi <= 65535:
            raise ValueError(f"{item!r}: need 1 <= LOW <= HIGH <= 65535")
        ports.extend(range(lo, hi + 1))
    if not ports:
        raise ValueError("no ports given")
    if len(set(ports)) != len(ports):
        raise ValueError("a port is listed twice")
    return tuple(ports)


Ports = Annotated[tuple[int, ...], BeforeValidator(_parse_ports)]
PosFloat = Annotated[float, Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Backoff(_Strict):
    initial_s: PosFloat = 0.5
    factor: Annotated[float, Field(ge=1)] = 2.0
    max_s: PosFloat = 30.0
    jitter: Annotated[float, Field(ge=0, le=1)] = 0.2


class Restart(_Strict):
    policy: Literal["never", "on-failure", "always"] = "on-failure"
    backoff: Backoff = Backoff()
    max_restarts: Annotated[int, Field(ge=0)] = 5
    window_s: PosFloat = 300.0
    stop_grace_s: PosFloat = 2.0
    fatal_exit_codes: list[int] = [2]


class Health(_Strict):
    check: Literal["healthz", "http", "tcp"] = "healthz"
    path: str = "/healthz"
    target: Literal["port", "control_port"] = "port"
    host: str | None = None  # default: loopback for control_port, else the bind host (0.0.0.0/:: → loopback)
    stats_path: str | None = "/stats"  # read with every passing healthz check; null = none
    startup_timeout_s: PosFloat = 10.0
    interval_s: PosFloat = 2.0
    timeout_s: PosFloat = 1.0
    unhealthy_after: Annotated[int, Field(ge=1)] = 3


class Placement(_Strict):
    load: Literal["users", "sessions", "cpu"] = "users"
    sessions_per_worker: Annotated[int, Field(ge=0)] = 1
    on_exhausted: Literal["reject"] = "reject"
    warm: Annotated[int, Field(ge=0)] = 1


class LogLimits(_Strict):
    lines_per_s: PosFloat = 20.0
    burst: Annotated[int, Field(ge=1)] = 100
    max_line_bytes: Annotated[int, Field(ge=80)] = 4096
    file_max_bytes: Annotated[int, Field(ge=1024)] = 10 * 1024 * 1024
    file_backups: Annotated[int, Field(ge=0)] = 3


class Urls(_Strict):
    url_gen: str
    url_audio: str = ""
    url_pcc: str = ""


class WorkerKind(_Strict):
    """One `workers:` entry after merging defaults; the template every instance of that kind starts from."""

    ports: Ports
    control_ports: Ports | None = None
    udp_ports: Ports | None = None
    command: Annotated[list[str], Field(min_length=1)]
    env: dict[str, str] = {}
    cwd: str | None = None
    host: str | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    urls: Urls
    settings: dict[str, Any] = {}
    restart: Restart = Restart()
    health: Health = Health()
    placement: Placement = Placement()
    log: LogLimits = LogLimits()

    @property
    def capacity(self) -> int:
        return self.placement.sessions_per_worker

    def uses(self, name: str) -> bool:
        return any(name in placeholders.names(arg, placeholders.COMMAND_NAMES) for arg in self.command)

    def udp_slice(self, index: int) -> tuple[int, int] | None:
        """The disjoint UDP range of the instance on ports[index]: udp_ports split evenly over the pool."""
        if not self.udp_ports:
            return None
        size = len(self.udp_ports) // len(self.ports)
        lo = self.udp_ports[0] + index * size
        return lo, lo + size - 1


class _Defaults(_Strict):
    restart: Restart = Restart()
    health: Health = Health()
    placement: Placement = Placement()
    log: LogLimits = LogLimits()


class _Top(_Strict):
    version: Literal[1]
    public_host: str = "auto"
    bind_host: str = "0.0.0.0"
    defaults: _Defaults | None = None
    workers: dict[str, Any] | None = None


@dataclass(frozen=True)
class StreamsConfig:
    """A validated config. `missing` = there was no file: no workers, sfuData empty for every session."""

    path: Path | None = None
    public_host: str = "auto"
    bind_host: str = "0.0.0.0"
    workers: Mapping[str, WorkerKind] = field(default_factory=dict)
    missing: bool = False


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (plain YAML keeps the last one silently)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def _merge(base: dict, over: Mapping) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def _pydantic_errors(exc: ValidationError, prefix: str) -> Iterator[tuple[str, str]]:
    for e in exc.errors():
        key = ".".join([prefix, *map(str, e["loc"])] if prefix else map(str, e["loc"])) or "(top level)"
        if e["type"] == "extra_forbidden":
            yield key, "unknown key"
        elif e["type"] == "missing":
            yield key, "missing required key"
        else:
            msg = e["msg"].removeprefix("Value error, ")
            yield key, msg if e["type"] == "value_error" else f"{msg} (got {e['input']!r:.60})"


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _kind_problems(kind: str, wk: WorkerKind, top: _Top, base: Path) -> Iterator[tuple[str, str]]:
    """Rules that span several keys of one worker entry."""
    k = f"workers.{kind}"
    used: set[str] = set()
    templated = [("command", wk.command), ("env", wk.env), ("settings", wk.settings)]
    for key, value in templated:
        for text in _strings(value):
            try:
                used |= placeholders.names(text, placeholders.COMMAND_NAMES)
            except placeholders.TemplateError as e:
                yield f"{k}.{key}", f"{e} in {text!r}"
    for key in URL_KEYS:
        try:
            names = placeholders.names(getattr(wk.urls, key), placeholders.URL_NAMES)
        except placeholders.TemplateError as e:
            yield f"{k}.urls.{key}", str(e)
            continue
        if kind in PER_SESSION_KINDS and "user_id" in names:
            yield f"{k}.urls.{key}", "{user_id} not allowed: every member of a session needs the same URL"
        if kind == "dash" and key == "url_gen" and "user_id" not in names:
            yield f"{k}.urls.{key}", "{user_id} required: users without their own path overwrite each other"
        if kind == "dash" and key == "url_gen" and wk.capacity != 1 and "session_id" not in names:
            yield f"{k}.urls.{key}", "{session_id} required when sessions share a relay " \
                "(sessions_per_worker != 1)"
    if kind in PER_SESSION_KINDS and wk.capacity != 1:
        yield f"{k}.placement.sessions_per_worker", f"must be 1: {kind} clients cannot be told apart by " \
            "session"
    if wk.placement.warm > len(wk.ports):
        yield f"{k}.placement.warm", f"{wk.placement.warm} exceeds the {len(wk.ports)} port(s) of the pool"
    if "public_host" in used and top.public_host == "auto":
        yield f"{k}.command", "{public_host} needs a configured public_host ('auto' is known only per client)"
    if wk.udp_ports is None and used & {"udp_min", "udp_max"}:
        yield f"{k}.udp_ports", "missing: the command uses {udp_min}/{udp_max}"
    if wk.udp_ports is not None:
        if not used & {"udp_min", "udp_max"}:
            yield f"{k}.udp_ports", "given but the command uses neither {udp_min} nor {udp_max}"
        if wk.udp_ports[-1] - wk.udp_ports[0] + 1 != len(wk.udp_ports):
            yield f"{k}.udp_ports", "must be one contiguous range (it is split into MIN:MAX slices)"
        if len(wk.udp_ports) < len(wk.ports):
            yield f"{k}.udp_ports", f"{len(wk.udp_ports)} port(s) cannot give {len(wk.ports)} workers a slice"
    if wk.control_ports is not None:
        if "control_port" not in used:
            yield f"{k}.control_ports", "given but the command does not use {control_port}"
        if len(wk.control_ports) < len(wk.ports):
            yield f"{k}.control_ports", f"needs at least one port per port in ports ({len(wk.ports)})"
    if wk.health.target == "control_port" and "control_port" not in used:
        yield f"{k}.health.target", "control_port, but the command does not pass {control_port}"
    if not wk.health.path.startswith("/"):
        yield f"{k}.health.path", "must start with '/'"
    if wk.health.stats_path is not None and not wk.health.stats_path.startswith("/"):
        yield f"{k}.health.stats_path", "must start with '/'"
    if wk.restart.backoff.max_s < wk.restart.backoff.initial_s:
        yield f"{k}.restart.backoff.max_s", "smaller than initial_s"
    if wk.settings and "settings_file" not in used:
        yield f"{k}.settings", "given but the command does not pass {settings_file}"
    try:
        json.dumps(wk.settings)
    except (TypeError, ValueError) as e:
        yield f"{k}.settings", f"not representable as JSON ({e})"
    for h, key in ((wk.host, "host"), (wk.health.host, "health.host")):
        if h is not None and normalize_host(h) != h:
            yield f"{k}.{key}", f"{h!r} is not a host name or IP address"
    cwd = base / wk.cwd if wk.cwd else None
    if cwd is not None and not cwd.is_dir():
        yield f"{k}.cwd", f"{cwd} is not a directory"
    yield from _executable_problems(k, wk, cwd)


def _executable_problems(k: str, wk: WorkerKind, cwd: Path | None) -> Iterator[tuple[str, str]]:
    try:
        exe = placeholders.render(wk.command[0], {n: sys.executable if n == "python" else "0"
                                                  for n in placeholders.COMMAND_NAMES})
    except placeholders.TemplateError:
        return
    if os.sep in exe:
        path = Path(exe) if os.path.isabs(exe) else (cwd or Path.cwd()) / exe
        if not (path.is_file() and os.access(path, os.X_OK)):
            yield f"{k}.command", f"executable {exe!r} not found or not executable"
    elif shutil.which(exe) is None:
        yield f"{k}.command", f"executable {exe!r} not found on PATH"
    if wk.command[0] == "{python}" and cwd is None and "-m" in wk.command[1:-1]:
        module = wk.command[wk.command.index("-m", 1) + 1]
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            yield f"{k}.command", f"python module {module!r} not found"


def _validate(raw: Any, path: Path) -> tuple[StreamsConfig | None, list[tuple[str, str]]]:
    if not isinstance(raw, dict):
        return None, [("(top level)", "must be a mapping with version: 1 and workers:")]
    problems: list[tuple[str, str]] = []
    try:
        top = _Top.model_validate(raw)
    except ValidationError as e:
        problems.extend(_pydantic_errors(e, ""))
        top = _Top.model_construct(public_host="auto", bind_host="0.0.0.0", defaults=None, workers=None)
    if top.public_host != "auto" and normalize_host(top.public_host) != top.public_host.strip("[]"):
        problems.append(("public_host", f"{top.public_host!r} is neither 'auto' nor a host name or IP"))
    if normalize_host(top.bind_host) != top.bind_host:
        problems.append(("bind_host", f"{top.bind_host!r} is not a host name or IP address"))
    raw_defaults = raw.get("defaults") if isinstance(raw.get("defaults"), dict) and top.defaults else {}
    for section, key in _PER_KIND_KEYS:
        if isinstance(raw_defaults.get(section), dict) and key in raw_defaults[section]:
            problems.append((f"defaults.{section}.{key}", "set it per worker entry (kinds differ)"))
    raw_workers = raw.get("workers") if isinstance(raw.get("workers"), dict) else {}
    workers: dict[str, WorkerKind] = {}
    for kind, entry in raw_workers.items():
        if kind not in KINDS:
            problems.append((f"workers.{kind}", f"unknown worker kind (known: {', '.join(KINDS)})"))
            continue
        if not isinstance(entry, dict):
            problems.append((f"workers.{kind}", "must be a mapping"))
            continue
        try:
            wk = WorkerKind.model_validate(_merge(_merge(_KIND_DEFAULTS[kind], raw_defaults), entry))
        except ValidationError as e:
            problems.extend(_pydantic_errors(e, f"workers.{kind}"))
            continue
        problems.extend(_kind_problems(kind, wk, top, path.parent))
        if wk.cwd:  # relative to the config file, wherever the orchestrator runs
            wk = wk.model_copy(update={"cwd": str((path.parent / wk.cwd).resolve())})
        workers[kind] = wk
    problems.extend(_overlaps(workers))
    public = top.public_host if top.public_host == "auto" else top.public_host.strip("[]")
    return StreamsConfig(path, public, top.bind_host, workers), problems


def _overlaps(workers: Mapping[str, WorkerKind]) -> Iterator[tuple[str, str]]:
    """TCP pools (ports, control_ports) must be pairwise disjoint, and so must the UDP ranges."""
    for proto, keys in (("TCP", ("ports", "control_ports")), ("UDP", ("udp_ports",))):
        seen: list[tuple[str, set[int]]] = []
        for kind, wk in workers.items():
            for key in keys:
                ports = getattr(wk, key)
                if ports is None:
                    continue
                for other, taken in seen:
                    common = taken.intersection(ports)
                    if common:
                        yield f"workers.{kind}.{key}", f"overlaps {other} ({proto} port {min(common)})"
                seen.append((f"workers.{kind}.{key}", set(ports)))


def load_config(path: str | os.PathLike[str]) -> StreamsConfig:
    """Read and validate a streams config; ConfigError lists every problem.

    A missing file is not an error: the result has no workers, so every session is served by the
    orchestrator itself (sfuData empty); this is logged once, here.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        log.warning("no stream worker config at %s: every session is served by the orchestrator "
                    "(sfuData empty)", p)
        return StreamsConfig(path=p, missing=True)
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([f"{p}: (file): cannot read ({e})"]) from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f"line {where.line + 1} column {where.column + 1}" if where else "(file)"
        raise ConfigError([f"{p}: {at}: invalid YAML ({getattr(e, 'problem', None) or e})"]) from None
    config, problems = _validate(raw, p)
    if problems or config is None:
        raise ConfigError([f"{p}: {key}: {problem}" for key, problem in problems])
    return config


def check_config(path: str | os.PathLike[str], *, missing_ok: bool = False) -> list[str]:
    """Every problem of a config file as "file: key: problem" lines; empty when it is valid.

    Starts nothing. A missing file is reported unless `missing_ok` (serve would run without workers).
    """
    if not Path(path).exists() and not missing_ok:
        return [f"{path}: (file): not found (without it the orchestrator runs no stream workers)"]
    try:
        load_config(path)
    except ConfigError as e:
        return e.errors
    return []
