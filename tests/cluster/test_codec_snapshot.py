"""Log entries, relayed frames and model snapshots survive the trip through Redis unchanged."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import ops
from orchestrator.cluster import codec
from orchestrator.cluster.snapshot import load_state, model_state
from orchestrator.model import Model
from orchestrator.protocol import CommandError

keys = st.one_of(st.text(max_size=8), st.sampled_from([codec.BLOB, codec.ESC]))
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.binary(max_size=64),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)


@given(args=st.dictionaries(st.text(max_size=8), values, max_size=5), op=st.text(min_size=1, max_size=12))
@settings(max_examples=200, deadline=None)
def test_entry_round_trip_keeps_bytes_as_bytes(args, op):
    fields = codec.encode_entry(op, args, "node-1", 7)
    assert not any(isinstance(v, bytes) for k, v in fields.items() if not k.startswith("b"))
    raw = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()}
    assert codec.decode_entry(raw) == (op, args, "node-1", 7)


@given(payload=st.binary(max_size=2048) | st.text(max_size=64), kind=st.text(max_size=16))
@settings(max_examples=100, deadline=None)
def test_data_frame_round_trip(payload, kind):
    header, body = codec.decode_frame(codec.data_frame(["u1", "u2"], "s", kind, payload))
    assert (header["r"], header["s"], header["k"], body) == (["u1", "u2"], "s", kind, payload)


def test_payload_bytes_are_not_encoded():
    payload = bytes(range(256)) * 4000
    frame = codec.data_frame(["u"], "s", "k", payload)
    assert frame.endswith(payload) and len(frame) < len(payload) + 64


def test_stream_ids_order_numerically():
    assert codec.parse_id("1700000000000-10") > codec.parse_id("1700000000000-9")
    assert codec.next_id("0-0") == "0-1"


# -- snapshots: random sequences of operations, then serialise, load and compare -----------------

USERS = [f"u{i}" for i in range(5)]
SESSIONS = ["s0", "s1"]
steps = st.lists(st.one_of(
    st.tuples(st.just("login"), st.sampled_from(USERS)),
    st.tuples(st.just("logout"), st.sampled_from(USERS)),
    st.tuples(st.just("add_session"), st.sampled_from(USERS), st.sampled_from(SESSIONS)),
    st.tuples(st.just("join"), st.sampled_from(USERS), st.sampled_from(SESSIONS)),
    st.tuples(st.just("leave"), st.sampled_from(USERS)),
    st.tuples(st.just("subscribe"), st.sampled_from(USERS), st.sampled_from(USERS), st.sampled_from("ab")),
    st.tuples(st.just("declare_stream"), st.sampled_from(USERS), st.sampled_from("ab")),
    st.tuples(st.just("update_user_data"), st.sampled_from(USERS), st.integers(0, 3)),
), max_size=40)


def run(model: Model, step: tuple) -> None:
    name, *rest = step
    args = {
        "login": lambda u: {"user_id": u, "name": u.upper(), "host": "h", "node": f"n{u[-1]}"},
        "logout": lambda u: {"user_id": u},
        "add_session": lambda u, s: {"user_id": u, "session_id": s, "max_sessions": 10, "name": s,
                                     "description": "", "protocol": "socketio", "scenario_id": 1,
                                     "scenario_name": None, "scenario_description": {"x": [1]},
                                     "worker": {"port": 1, "urls": {}}},
        "join": lambda u, s: {"user_id": u, "session_id": s, "max_users": 3},
        "leave": lambda u: {"user_id": u},
        "subscribe": lambda u, sender, kind: {"user_id": u, "sender": sender, "kind": kind},
        "declare_stream": lambda u, kind: {"user_id": u, "kind": kind, "description": "d"},
        "update_user_data": lambda u, n: {"user_id": u, "patch": {f"k{n}": n}},
    }[name](*rest)
    try:
        ops.OPS[name](model, **args)
    except CommandError:
        pass


@given(steps)
@settings(max_examples=150, deadline=None)
def test_snapshot_round_trip_is_the_same_model(history):
    model = Model()
    for step in history:
        run(model, step)
    text, blobs = codec.dumps_packed(model_state(model))
    copy = Model()
    load_state(copy, codec.loads_packed(text, blobs))
    assert copy.users == model.users
    assert list(copy.users) == list(model.users) and list(copy.sessions) == list(model.sessions)
    assert copy.sessions == model.sessions
    assert copy._subscribers == model._subscribers
    assert copy.dump() == model.dump()
    for step in history[:10]:  # and the copy goes on exactly like the original
        run(model, step)
        run(copy, step)
    assert copy.dump() == model.dump() and copy._subscribers == model._subscribers
