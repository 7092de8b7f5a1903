"""streams.yaml validation: every rule has a case, and the shipped file is valid."""

import datetime
from pathlib import Path

import pytest
import yaml

from orchestrator.streams.config import ConfigError, check_config, load_config

SHIPPED = Path(__file__).parents[2] / "config" / "streams.yaml"


def base(fake: str) -> dict:
    cmd = ["{python}", fake, "--port", "{port}"]
    return {"version": 1, "workers": {
        "tcpreflector": {"ports": "20000-20001", "command": [*cmd, "--control-port", "{control_port}"],
                         "urls": {"url_gen": "tcp://{public_host}:{port}"}},
        "webrtc": {"ports": "20010-20011", "udp_ports": "30000-30009",
                   "command": [*cmd, "--udp-ports", "{udp_min}:{udp_max}"],
                   "urls": {"url_gen": "http://{public_host}:{port}/"}},
        "dash": {"ports": 20020, "command": list(cmd),
                 "urls": {"url_gen": "http://{public_host}:{port}/{session_id}/{user_id}/"}}}}


def put(doc: dict, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    for key in path:
        doc = doc.setdefault(key, {})
    doc[last] = value


def drop(doc: dict, dotted: str) -> None:
    *path, last = dotted.split(".")
    for key in path:
        doc = doc[key]
    del doc[last]


def append(doc: dict, dotted: str, *values) -> None:
    *path, last = dotted.split(".")
    for key in path:
        doc = doc[key]
    doc[last] = [*doc[last], *values]


W = "workers."
CASES = [  # (id, change, expected "key: problem" fragment)
    ("unknown top key", lambda d: put(d, "colour", "red"), "colour: unknown key"),
    ("unknown entry key", lambda d: put(d, W + "dash.portz", 1), "workers.dash.portz: unknown key"),
    ("unknown nested key", lambda d: put(d, W + "dash.health.intervl_s", 1),
     "workers.dash.health.intervl_s: unknown key"),
    ("unknown defaults key", lambda d: put(d, "defaults.restart.retries", 3),
     "defaults.restart.retries: unknown key"),
    ("string for a number", lambda d: put(d, W + "dash.health.interval_s", "2"),
     "workers.dash.health.interval_s: Input should be a valid number (got '2')"),
    ("string for a list", lambda d: put(d, W + "dash.command", "python -m x"),
     "workers.dash.command: Input should be a valid list"),
    ("bad choice", lambda d: put(d, "defaults.restart.policy", "sometimes"),
     "defaults.restart.policy: Input should be"),
    ("negative count", lambda d: put(d, W + "dash.placement.warm", -1),
     "workers.dash.placement.warm: Input should be greater than or equal to 0"),
    ("env value not a string", lambda d: put(d, W + "dash.env", {"A": 1}),
     "workers.dash.env.A: Input should be"),
    ("workers not a mapping", lambda d: put(d, "workers", [1]),
     "workers: Input should be a valid dictionary"),
    ("entry not a mapping", lambda d: put(d, W + "dash", "yes"), "workers.dash: must be a mapping"),
    ("unknown kind", lambda d: put(d, W + "rtmp", {}), "workers.rtmp: unknown worker kind"),
    ("missing version", lambda d: drop(d, "version"), "version: missing required key"),
    ("wrong version", lambda d: put(d, "version", 2), "version: Input should be 1"),
    ("missing urls", lambda d: drop(d, W + "dash.urls"), "workers.dash.urls: missing required key"),
    ("missing url_gen", lambda d: put(d, W + "dash.urls", {}),
     "workers.dash.urls.url_gen: missing required key"),
    ("missing command", lambda d: drop(d, W + "dash.command"), "workers.dash.command: missing required key"),
    ("empty command", lambda d: put(d, W + "dash.command", []),
     "workers.dash.command: List should have at least 1"),
    ("reversed range", lambda d: put(d, W + "dash.ports", "9-3"), "workers.dash.ports: '9-3': need 1 <= LOW"),
    ("port too large", lambda d: put(d, W + "dash.ports", 70000), "workers.dash.ports: 70000: need"),
    ("port twice", lambda d: put(d, W + "dash.ports", [20020, "20020"]),
     "workers.dash.ports: a port is listed twice"),
    ("not a port", lambda d: put(d, W + "dash.ports", 3.5), "workers.dash.ports: 3.5 is not a port"),
    ("overlapping pools", lambda d: put(d, W + "dash.ports", "20001"),
     "workers.dash.ports: overlaps workers.tcpreflector.ports (TCP port 20001)"),
    ("control ports overlap a pool", lambda d: put(d, W + "tcpreflector.control_ports", "20011-20012"),
     "workers.webrtc.ports: overlaps workers.tcpreflector.control_ports (TCP port 20011)"),
    ("overlapping UDP ranges", lambda d: (put(d, W + "dash.udp_ports", "30005-30006"),
                                          append(d, W + "dash.command", "{udp_min}")),
     "workers.dash.udp_ports: overlaps workers.webrtc.udp_ports (UDP port 30005)"),
    ("unknown placeholder in command", lambda d: append(d, W + "dash.command", "--x={prot}"),
     "workers.dash.command: unknown placeholder {prot}"),
    ("unknown placeholder in env", lambda d: put(d, W + "dash.env", {"A": "{nope}"}),
     "workers.dash.env: unknown placeholder {nope}"),
    ("unknown placeholder in url", lambda d: put(d, W + "dash.urls.url_pcc", "http://{host}/{user_id}"),
     "workers.dash.urls.url_pcc: unknown placeholder {host}"),
    ("unknown old placeholder", lambda d: put(d, W + "webrtc.urls.url_gen", "http://%EXTERNAL_HOST%/"),
     "workers.webrtc.urls.url_gen: unknown placeholder %EXTERNAL_HOST%"),
    ("unbalanced brace", lambda d: append(d, W + "dash.command", "{port"),
     "workers.dash.command: unbalanced '{'"),
    ("user id in tcpreflector url", lambda d: put(d, W + "tcpreflector.urls.url_gen",
     "tcp://{public_host}/{user_id}"),
     "workers.tcpreflector.urls.url_gen: {user_id} not allowed"),
    ("old user id in webrtc url", lambda d: put(d, W + "webrtc.urls.url_audio",
     "http://%EXTERNAL_HOSTNAME%/%USER_ID%"),
     "workers.webrtc.urls.url_audio: {user_id} not allowed"),
    ("dash url without user id", lambda d: put(d, W + "dash.urls.url_gen",
     "http://{public_host}:{port}/{session_id}/"),
     "workers.dash.urls.url_gen: {user_id} required"),
    ("shared dash url without session id", lambda d: put(d, W + "dash.urls.url_gen",
     "http://{public_host}/{user_id}/"),
     "workers.dash.urls.url_gen: {session_id} required"),
    ("missing executable path", lambda d: put(d, W + "dash.command", ["/nonexistent/bin/sfu", "{port}"]),
     "workers.dash.command: executable '/nonexistent/bin/sfu' not found"),
    ("missing executable on PATH", lambda d: put(d, W + "dash.command", ["no-such-sfu-binary", "{port}"]),
     "workers.dash.command: executable 'no-such-sfu-binary' not found on PATH"),
    ("missing python module", lambda d: put(d, W + "dash.command", ["{python}", "-m", "workers.nosuch",
     "{port}"]),
     "workers.dash.command: python module 'workers.nosuch' not found"),
    ("shared tcpreflector", lambda d: put(d, W + "tcpreflector.placement", {"sessions_per_worker": 2}),
     "workers.tcpreflector.placement.sessions_per_worker: must be 1"),
    ("more warm than ports", lambda d: put(d, W + "dash.placement", {"warm": 2}),
     "workers.dash.placement.warm: 2 exceeds the 1 port(s)"),
    ("udp placeholders without udp_ports", lambda d: drop(d, W + "webrtc.udp_ports"),
     "workers.webrtc.udp_ports: missing: the command uses {udp_min}/{udp_max}"),
    ("unused udp_ports", lambda d: put(d, W + "dash.udp_ports", "31000-31001"),
     "workers.dash.udp_ports: given but the command uses neither"),
    ("udp range too small", lambda d: put(d, W + "webrtc.udp_ports", 30000),
     "workers.webrtc.udp_ports: 1 port(s) cannot give 2 workers a slice"),
    ("udp range with a gap", lambda d: put(d, W + "webrtc.udp_ports", ["30000-30004", "30006-30010"]),
     "workers.webrtc.udp_ports: must be one contiguous range"),
    ("unused control_ports", lambda d: put(d, W + "dash.control_ports", 20030),
     "workers.dash.control_ports: given but the command does not use {control_port}"),
    ("too few control_ports", lambda d: put(d, W + "tcpreflector.control_ports", 20040),
     "workers.tcpreflector.control_ports: needs at least one port per port"),
    ("control health without control port", lambda d: put(d, W + "dash.health", {"target": "control_port"}),
     "workers.dash.health.target: control_port, but the command does not pass {control_port}"),
    ("tcpreflector without control port", lambda d: put(d, W + "tcpreflector.command", ["{python}",
     "{port}"]),
     "workers.tcpreflector.health.target: control_port, but"),
    ("public_host in command while auto", lambda d: append(d, W + "webrtc.command", "--public-ip",
     "{public_host}"),
     "workers.webrtc.command: {public_host} needs a configured public_host"),
    ("settings without settings file", lambda d: put(d, W + "dash.settings", {"a": 1}),
     "workers.dash.settings: given but the command does not pass {settings_file}"),
    ("settings not JSON", lambda d: (put(d, W + "dash.settings", {"when": datetime.date(2024, 1, 1)}),
                                     append(d, W + "dash.command", "{settings_file}")),
     "workers.dash.settings: not representable as JSON"),
    ("per-kind key in defaults", lambda d: put(d, "defaults.placement.sessions_per_worker", 0),
     "defaults.placement.sessions_per_worker: set it per worker entry"),
    ("invalid public_host", lambda d: put(d, "public_host", "http://x"),
     "public_host: 'http://x' is neither"),
    ("invalid bind_host", lambda d: put(d, "bind_host", "0.0.0.0:80"),
     "bind_host: '0.0.0.0:80' is not a host"),
    ("invalid worker host", lambda d: put(d, W + "dash.host", "a b"),
     "workers.dash.host: 'a b' is not a host"),
    ("invalid health host", lambda d: put(d, W + "dash.health", {"host": "x/y"}),
     "workers.dash.health.host:"),
    ("health path", lambda d: put(d, W + "dash.health", {"path": "healthz"}),
     "workers.dash.health.path: must start with '/'"),
    ("stats path", lambda d: put(d, W + "dash.health", {"stats_path": "stats"}),
     "workers.dash.health.stats_path: must start with '/'"),
    ("backoff max below initial", lambda d: put(d, "defaults.restart", {"backoff": {"initial_s": 5,
     "max_s": 1}}),
     "workers.dash.restart.backoff.max_s: smaller than initial_s"),
    ("missing cwd", lambda d: put(d, W + "dash.cwd", "no-such-dir"), "workers.dash.cwd:"),
]


@pytest.mark.parametrize(("change", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_rule_names_file_key_and_problem(h, tmp_path, change, expected):
    doc = base(h.FAKE)
    path = tmp_path / "streams.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    assert check_config(path) == []
    change(doc)
    path.write_text(yaml.dump(doc, sort_keys=False), encoding="utf-8")
    errors = check_config(path)
    assert any(e.startswith(f"{path}: {expected}") for e in errors), errors
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == errors


@pytest.mark.parametrize(("text", "expected"), [
    ("version: 1\nversion: 1\n", "line 2 column 1: invalid YAML (duplicate key 'version')"),
    ("version: [1\n", "invalid YAML"),
    ("- 1\n", "(top level): must be a mapping"),
    ("", "(top level): must be a mapping"),
])
def test_malformed_files(tmp_path, text, expected):
    path = tmp_path / "streams.yaml"
    path.write_text(text, encoding="utf-8")
    assert any(e.startswith(f"{path}: ") and expected in e for e in check_config(path)), check_config(path)


def test_all_problems_are_reported_at_once(h, tmp_path):
    doc = base(h.FAKE)
    put(doc, "colour", "red")
    put(doc, W + "dash.ports", "20001")
    put(doc, W + "webrtc.urls.url_gen", "http://{public_host}/{user_id}")
    path = tmp_path / "streams.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    assert len(check_config(path)) == 3


def test_unreadable_and_missing_files(tmp_path):
    assert check_config(tmp_path) == [f"{tmp_path}: (file): cannot read ([Errno 21] Is a directory: "
                                      f"'{tmp_path}')"]
    missing = tmp_path / "none.yaml"
    assert check_config(missing)[0].startswith(f"{missing}: (file): not found")
    assert check_config(missing, missing_ok=True) == []
    config = load_config(missing)
    assert config.missing and dict(config.workers) == {}


def test_shipped_config_is_valid_and_complete():
    assert check_config(SHIPPED) == []
    config = load_config(SHIPPED)
    assert set(config.workers) == {"tcpreflector", "webrtc", "dash"}
    assert config.public_host == "auto"
    assert {k: w.capacity for k, w in config.workers.items()} == {"tcpreflector": 1, "webrtc": 1, "dash": 0}
    assert config.workers["tcpreflector"].health.target == "control_port"
    assert config.workers["webrtc"].udp_slice(0) == (9000, 9049)
    assert config.workers["webrtc"].udp_slice(1) == (9050, 9099)
    for kind in ("tcp", "webrtc", "dash"):
        assert f"workers.{kind}" in config.workers[{"tcp": "tcpreflector"}.get(kind, kind)].command


def test_defaults_merge_under_entries(h, tmp_path):
    doc = base(h.FAKE)
    put(doc, "defaults.health", {"interval_s": 7, "unhealthy_after": 9})
    put(doc, W + "dash.health", {"interval_s": 1})
    put(doc, "public_host", "[2001:db8::1]")
    path = tmp_path / "streams.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    config = load_config(path)
    assert (config.workers["dash"].health.interval_s, config.workers["dash"].health.unhealthy_after) == (1, 9)
    assert config.workers["webrtc"].health.interval_s == 7
    assert config.public_host == "2001:db8::1"
