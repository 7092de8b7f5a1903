"""Pure parts: sfuData rendering, host handling, placeholders, and the placement choice."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.streams import placeholders
from orchestrator.streams.placement import Candidate, choose, least_loaded
from orchestrator.streams.urls import normalize_host, render_sfu_data

TCP = {"url_gen": "tcp://{public_host}:{port}"}
DASH = {"url_gen": "http://{public_host}:{port}/{session_id}/{user_id}/"}


def test_tcpreflector_url_is_the_same_for_every_member_and_audio_pcc_default_empty():
    a = render_sfu_data(TCP, public_host="vr.example.org", port=8098, session_id="s", user_id="alice")
    b = render_sfu_data(TCP, public_host="vr.example.org", port=8098, session_id="s", user_id="bob")
    assert a == b == {"url_gen": "tcp://vr.example.org:8098", "url_audio": "", "url_pcc": ""}


def test_dash_url_is_per_user():
    urls = render_sfu_data(DASH, public_host="10.0.0.5", port=8096, session_id="s-1", user_id="u-2")
    assert urls["url_gen"] == "http://10.0.0.5:8096/s-1/u-2/"


@pytest.mark.parametrize(("host", "expected"), [
    ("::1", "http://[::1]:8096/s/u/"),
    ("[::1]:8090", "http://[::1]:8096/s/u/"),
    ("[2001:db8::7]", "http://[2001:db8::7]:8096/s/u/"),
    ("vr.example.org:8090", "http://vr.example.org:8096/s/u/"),
    ("127.0.0.1:8090", "http://127.0.0.1:8096/s/u/"),
])
def test_host_header_forms_including_ipv6(host, expected):
    urls = render_sfu_data(DASH, public_host=host, port=8096, session_id="s", user_id="u")
    assert urls["url_gen"] == expected


@pytest.mark.parametrize("host", ["evil.org/x", "a@b", "[::1", "[nothex]", "h:port", "", "a b",
                                  "fe80::1%eth0", "x" * 300])
def test_hostile_or_malformed_hosts_are_refused(host):
    assert normalize_host(host) is None
    with pytest.raises(ValueError):
        render_sfu_data(TCP, public_host=host, port=1, session_id="s", user_id="u")


def test_old_placeholders_everywhere_they_occur_and_ids_encoded():
    old = {"url_gen": "http://%EXTERNAL_HOSTNAME%:%SFU_PORT%/%SESSION_ID%/%USER_ID%/",
           "url_audio": "http://%EXTERNAL_HOSTNAME%:%SFU_PORT%/%USER_ID%/audio/%USER_ID%",
           "url_pcc": "{{literal}}-{port}-{port}"}
    urls = render_sfu_data(old, public_host="::1", port=8096, session_id="a/b", user_id="ü ?")
    assert urls == {"url_gen": "http://[::1]:8096/a%2Fb/%C3%BC%20%3F/",
                    "url_audio": "http://[::1]:8096/%C3%BC%20%3F/audio/%C3%BC%20%3F",
                    "url_pcc": "{literal}-8096-8096"}


def test_placeholder_names_are_checked_against_their_context():
    assert placeholders.names("{python} -p {port}", placeholders.COMMAND_NAMES) == {"python", "port"}
    with pytest.raises(placeholders.TemplateError, match=r"unknown placeholder \{user_id\}"):
        placeholders.names("--id {user_id}", placeholders.COMMAND_NAMES)
    assert placeholders.render("%SFU_PORT%:%SFU_PORT%", {"port": 5}) == "5:5"
    assert placeholders.render("100%", {}) == "100%"


@pytest.mark.parametrize(("loads", "index"), [([2, 1, 3], 1), ([1, 1], 0), ([3, 0], 1), ([5], 0), ([], None)])
def test_least_loaded(loads, index):
    assert least_loaded(loads) == index


def running(users, sessions=1, capacity=0, cpu=0.0, state="RUNNING"):
    return Candidate(state, sessions, capacity, users, cpu)


@pytest.mark.parametrize(("loads", "index"), [([2, 1, 3], 1), ([1, 1], 0), ([3, 0], 1)])
def test_choose_by_users(loads, index):
    assert choose([running(u) for u in loads]) == index


def test_choose_skips_full_and_not_running_workers_and_breaks_ties():
    cands = [running(0, state="STARTING"), running(0, sessions=1, capacity=1), running(4, sessions=2),
             running(4, sessions=1), running(9, state="FATAL")]
    assert choose(cands) == 3  # same users, fewer sessions
    assert choose(cands, "sessions") == 3
    assert choose([running(1, cpu=80), running(5, cpu=10)], "cpu") == 1
    assert choose([running(1, cpu=11), running(0, cpu=12)], "cpu") == 1  # within one CPU step: users decide
    assert choose([running(0, sessions=1, capacity=1)]) is None
    assert choose([running(0, sessions=500, capacity=0)]) == 0  # 0 = unlimited


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 5), st.sampled_from(["RUNNING", "BACKOFF"])),
                max_size=8))
def test_choice_is_a_minimum_among_eligible(raw):
    cands = [Candidate(state, sessions, 0, users) for users, sessions, state in raw]
    best = choose(cands)
    eligible = [c for c in cands if c.state == "RUNNING"]
    if not eligible:
        assert best is None
    else:
        assert cands[best].state == "RUNNING"
        assert (cands[best].users, cands[best].sessions) == min((c.users, c.sessions) for c in eligible)
        key = (cands[best].users, cands[best].sessions)
        assert best == min(i for i, c in enumerate(cands)
                           if c.state == "RUNNING" and (c.users, c.sessions) == key)

