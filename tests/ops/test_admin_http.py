"""The /admin routes over real HTTP: auth, static files, the JSON API, actions, refusals."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest
from ops_server import TOKEN, request

import orchestrator.http.admin as admin_module

STATIC = Path(admin_module.__file__).parent / "static"
PROTECTED = [("GET", "/admin"), ("GET", "/admin/api/state"), ("GET", "/admin/api/logs?after=0"),
             ("POST", "/admin/api/sessions/x/close"), ("POST", "/admin/api/workers/x/restart")]


def assert_guarded(reply) -> None:
    assert reply.headers["content-security-policy"].startswith("default-src 'self'")
    assert reply.headers["x-frame-options"] == "DENY"


async def test_page_is_served_with_security_headers_and_no_inline_code(server):
    reply = await request(server.port, "GET", "/admin")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/html")
    assert_guarded(reply)
    html = reply.body.decode()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all("src=" in attrs and not body.strip() for attrs, body in scripts)
    assert not re.search(r"\s(on\w+|style)\s*=", html), "inline handlers or styles would break the CSP"
    assert "innerHTML" not in (STATIC / "admin.js").read_text(), "server data must be inserted as text"
    assert (await request(server.port, "GET", "/admin/")).body == reply.body


@pytest.mark.parametrize("name, kind", [("admin.js", "javascript"), ("admin.css", "text/css"),
                                        ("admin.html", "text/html")])
async def test_static_files(server, name, kind):
    reply = await request(server.port, "GET", f"/admin/static/{name}")
    assert reply.status == 200
    assert kind in reply.headers["content-type"]
    assert reply.body == (STATIC / name).read_bytes()
    assert_guarded(reply)


@pytest.mark.parametrize("target", [
    "/admin/static/../admin.py", "/admin/static/%2e%2e/admin.py", "/admin/static/..%2fadmin.py",
    "/admin/static/%2e%2e%2f%2e%2e%2fserver.py", "/admin/static//etc/passwd", "/admin/static/",
    "/admin/static/.", "/admin/static/admin.js/..", "/admin/static/missing.js",
])
async def test_path_traversal_and_unknown_files_are_refused(server, target):
    reply = await request(server.port, "GET", target)
    assert reply.status == 404, target
    assert b"def handle" not in reply.body and b"root:" not in reply.body
    assert_guarded(reply)


@pytest.mark.parametrize("method, target, allow", [
    ("POST", "/admin", "GET"), ("DELETE", "/admin/api/state", "GET"), ("POST", "/admin/api/logs", "GET"),
    ("GET", "/admin/api/sessions/x/close", "POST"), ("PUT", "/admin/api/workers/x/restart", "POST"),
    ("POST", "/admin/static/admin.js", "GET"),
])
async def test_wrong_method_is_405(server, method, target, allow):
    reply = await request(server.port, method, target)
    assert reply.status == 405
    assert reply.headers["allow"] == allow
    assert_guarded(reply)


@pytest.mark.parametrize("target", ["/admin/api", "/admin/api/nothing", "/admin/api/sessions/x",
                                    "/admin/api/sessions/a/b/close", "/admin/api/state/extra", "/admin/x"])
async def test_unknown_paths_are_404(server, target):
    reply = await request(server.port, "GET", target)
    assert reply.status == 404
    assert reply.json() == {"error": "not found"}
    assert_guarded(reply)


async def test_state_lists_sessions_members_and_streams(server, clients):
    alice, bob = await clients(server, "alice", "bob")
    session = await alice.add_session("state-demo", protocol="socketio")
    await bob.join_session(session["sessionId"])
    await bob.declare_data_stream("pointcloud", "pc")
    state = (await request(server.port, "GET", "/admin/api/state")).json()
    [shown] = [s for s in state["sessions"] if s["sessionId"] == session["sessionId"]]
    assert shown["sessionName"] == "state-demo"
    assert shown["sessionProtocol"] == "socketio"
    assert shown["sessionUserNames"] == ["alice", "bob"]
    assert shown["sessionAdministrator"] == alice.user_id
    assert shown["streams"] == {alice.user_id: [], bob.user_id: ["pointcloud"]}
    users = {u["userId"]: u for u in state["users"]}
    assert users[bob.user_id]["userName"] == "bob"
    assert users[bob.user_id]["sessionId"] == session["sessionId"]
    assert state["workers"] == [] and state["connections"] >= 2 and state["draining"] is False


async def test_logs_after_sequence(server, clients):
    first = (await request(server.port, "GET", "/admin/api/logs")).json()["lines"]
    last = max((line["seq"] for line in first), default=0)
    [alice] = await clients(server, "alice")
    session = await alice.add_session("log-demo")
    # the server logs the new session before it acknowledges AddSession
    newer = (await request(server.port, "GET", f"/admin/api/logs?after={last}")).json()["lines"]
    assert any(session["sessionId"] in line["line"] and line["level"] == "info" for line in newer)
    assert all(line["seq"] > last for line in newer)
    assert [line["seq"] for line in newer] == sorted(line["seq"] for line in newer)
    for bad in ("-1", "abc", "1.5"):
        reply = await request(server.port, "GET", f"/admin/api/logs?after={bad}")
        assert reply.status == 400 and "after" in reply.json()["error"]


async def test_close_session_action_closes_it_for_real_clients(server, clients):
    alice, bob = await clients(server, "alice", "bob")
    session = await alice.add_session("to-close")
    await bob.join_session(session["sessionId"])
    reply = await request(server.port, "POST", f"/admin/api/sessions/{session['sessionId']}/close")
    assert reply.status == 200
    assert reply.json() == {"closed": True, "sessionId": session["sessionId"]}
    for client in (alice, bob):
        assert (await client.next_event("SessionClosed", timeout_s=5))[0] == "SessionClosed"
    state = (await request(server.port, "GET", "/admin/api/state")).json()
    assert session["sessionId"] not in {s["sessionId"] for s in state["sessions"]}
    again = await request(server.port, "POST", f"/admin/api/sessions/{session['sessionId']}/close")
    assert again.status == 404 and again.json()["sessionId"] == session["sessionId"]


async def test_cross_site_post_is_refused(server, clients):
    [alice] = await clients(server, "alice")
    session = await alice.add_session("csrf-target")
    target = f"/admin/api/sessions/{session['sessionId']}/close"
    for origin in ("http://evil.example", "null", f"http://127.0.0.1:{server.port + 1}"):
        reply = await request(server.port, "POST", target, {"Origin": origin})
        assert reply.status == 403, origin
    state = (await request(server.port, "GET", "/admin/api/state")).json()
    assert session["sessionId"] in {s["sessionId"] for s in state["sessions"]}
    same_site = await request(server.port, "POST", target, {"Origin": f"http://127.0.0.1:{server.port}"})
    assert same_site.status == 200


async def test_restart_unknown_worker_is_404(server):
    reply = await request(server.port, "POST", "/admin/api/workers/nope-1/restart")
    assert reply.status == 404 and reply.json()["worker"] == "nope-1"


async def test_untrusted_peer_is_refused_everywhere_but_static(untrusted_server):
    for method, target in PROTECTED:
        reply = await request(untrusted_server.port, method, target)
        assert reply.status == 403, target
        assert "trusted" in reply.json()["error"]
        assert_guarded(reply)
    assert (await request(untrusted_server.port, "GET", "/admin/static/admin.js")).status == 200


async def test_token_is_required_even_from_loopback(token_server):
    port = token_server.port
    for method, target in PROTECTED:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            reply = await request(port, method, target, headers)
            assert reply.status == 401, (target, headers)
            assert reply.headers["www-authenticate"].startswith("Bearer")
    assert (await request(port, "GET", "/admin?token=wrong")).status == 401
    assert (await request(port, "GET", f"/admin?token={TOKEN}")).status == 200
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert (await request(port, "GET", "/admin", bearer)).status == 200
    assert (await request(port, "GET", "/admin/api/state", bearer)).json()["draining"] is False
    assert (await request(port, "POST", "/admin/api/sessions/none/close", bearer)).status == 404


async def wait_for_worker(port: int, predicate, timeout_s: float = 15) -> dict:
    """Poll the state API until a worker satisfies `predicate` (the server is another process)."""
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    deadline = time.monotonic() + timeout_s
    while True:
        workers = (await request(port, "GET", "/admin/api/state", bearer)).json()["workers"]
        found = next((w for w in workers if predicate(w)), None)
        if found or time.monotonic() > deadline:
            assert found, workers
            return found
        await asyncio.sleep(0.1)


async def test_restart_worker_action(token_server):
    worker = await wait_for_worker(token_server.port, lambda w: w["state"] == "RUNNING" and w["pid"])
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    reply = await request(token_server.port, "POST", f"/admin/api/workers/{worker['name']}/restart", bearer)
    assert reply.status == 200
    assert reply.json() == {"restarted": True, "worker": worker["name"]}
    restarted = await wait_for_worker(token_server.port, lambda w: w["name"] == worker["name"]
                                      and w["state"] == "RUNNING" and w["pid"] not in (None, worker["pid"]))
    assert restarted["restarts"] >= worker["restarts"]
