"""Per-session and shared tokens, by query parameter or bearer header; reload on SIGHUP."""

from __future__ import annotations

import json
import signal

import httpx
import pytest


@pytest.fixture
def secured(spawn):
    return spawn({"token": "shared-secret", "session_tokens": {"vip": "vip-secret"}, "long_poll_ms": 0})


def test_missing_and_wrong_tokens(secured):
    with httpx.Client(base_url=secured.base) as c:
        r = c.put("/open/u1/a", content=b"x")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert c.put("/open/u1/a?token=nope", content=b"x").status_code == 403
        assert c.get("/open/u1/a", headers={"Authorization": "Bearer nope"}).status_code == 403
        # a per-session token replaces the shared one for that session
        assert c.put("/vip/u1/a?token=shared-secret", content=b"x").status_code == 403
        assert c.delete("/vip/*?token=shared-secret").status_code == 403
        assert c.get("/healthz").status_code == 200 and c.get("/stats").status_code == 200
        drops = c.get("/stats").json()["drops"]
    assert drops == {"unauthorized": 1, "forbidden": 4}


def test_token_by_query_or_header_and_not_part_of_key(secured):
    with httpx.Client(base_url=secured.base) as c:
        assert c.put("/vip/u1/a.mpd?token=vip-secret", content=b"mpd").status_code == 200
        assert c.get("/vip/u1/a.mpd", headers={"Authorization": "bearer vip-secret"}).content == b"mpd"
        assert c.put("/s2/u1/b?v=1&token=shared-secret", content=b"b").status_code == 200
        assert c.get("/s2/u1/b?v=1", headers={"Authorization": "Bearer shared-secret"}).content == b"b"
        assert c.delete("/s2/*?token=shared-secret").status_code == 200


def test_sighup_reloads_tokens(secured):
    assert secured.settings_path is not None
    secured.settings_path.write_text(json.dumps({"session_tokens": {"vip": "rotated"}}))
    mark = len(secured.lines)
    secured.proc.send_signal(signal.SIGHUP)
    secured.wait_log("tokens reloaded", start=mark)
    with httpx.Client(base_url=secured.base) as c:
        assert c.put("/vip/u1/a?token=vip-secret", content=b"x").status_code == 403
        assert c.put("/vip/u1/a?token=rotated", content=b"x").status_code == 200
        assert c.put("/open/u1/a?token=shared-secret", content=b"x").status_code == 403  # shared token gone


def test_bad_reload_keeps_old_tokens(secured):
    secured.settings_path.write_text(json.dumps({"token": 5}))
    mark = len(secured.lines)
    secured.proc.send_signal(signal.SIGHUP)
    secured.wait_log("reload ignored: token", start=mark)
    with httpx.Client(base_url=secured.base) as c:
        assert c.put("/open/u1/a?token=shared-secret", content=b"x").status_code == 200


def test_expect_is_refused_before_continue_without_token(secured, raw):
    c = raw(secured.port)
    c.send("PUT /open/u1/a HTTP/1.1\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n")
    r = c.response()
    assert r.status == 401 and r.headers["connection"] == "close"  # no 100 Continue came first
    assert c.closed()
