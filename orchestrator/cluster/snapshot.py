"""The whole Model as plain JSON-able data and back: what a process joining the cluster loads.

Order is state too: sessions and users keep their dict order (GetSessions and DumpData show it),
members their join order. The `_subscribers` index is not stored; it is rebuilt from the users'
subscriptions, which hold the same facts.
"""

from __future__ import annotations

from typing import Any

from ..model import Model, Session, User


def model_state(model: Model) -> dict[str, Any]:
    return {
        "users": [
            {"id": u.user_id, "name": u.name, "host": u.host, "node": u.node, "data": u.user_data,
             "session": u.session_id, "orphaned": u.orphaned_from, "streams": list(u.streams.items()),
             "subs": [[key, uid, kind] for key, (uid, kind) in u.subscriptions.items()]}
            for u in model.users.values()
        ],
        "sessions": [
            {"id": s.session_id, "name": s.name, "description": s.description, "protocol": s.protocol,
             "admin": s.admin_id, "scenario": [s.scenario_id, s.scenario_name, s.scenario_description],
             "members": s.members, "master": s.master_id, "worker": s.worker}
            for s in model.sessions.values()
        ],
    }


def load_state(model: Model, state: dict[str, Any]) -> None:
    """Replace the model's contents (in place: the App and its handlers keep their reference)."""
    users: dict[str, User] = {}
    subscribers: dict[tuple[str, str], set[str]] = {}
    for u in state["users"]:
        user = User(user_id=u["id"], name=u["name"], host=u["host"], node=u["node"], user_data=u["data"],
                    session_id=u["session"], orphaned_from=u["orphaned"], streams=dict(u["streams"]),
                    subscriptions={key: (uid, kind) for key, uid, kind in u["subs"]})
        users[user.user_id] = user
        for uid, kind in user.subscriptions.values():
            subscribers.setdefault((uid, kind), set()).add(user.user_id)
    sessions: dict[str, Session] = {}
    for s in state["sessions"]:
        scenario_id, scenario_name, scenario_description = s["scenario"]
        sessions[s["id"]] = Session(
            session_id=s["id"], name=s["name"], description=s["description"], protocol=s["protocol"],
            admin_id=s["admin"], scenario_id=scenario_id, scenario_name=scenario_name,
            scenario_description=scenario_description, members=list(s["members"]), master_id=s["master"],
            worker=s["worker"])
    model.users, model.sessions, model._subscribers = users, sessions, subscribers
