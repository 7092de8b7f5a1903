"""Every state change as an operation: a function of the model and plain JSON-able arguments.

Each returns (result, Outcome) or raises CommandError. One process applies them at once; a cluster
applies them in one agreed order on every process, so they must be deterministic: ids, limits and
everything else that varies come in the arguments, never from the clock or a random source here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .model import Model, Outcome
from .protocol import CommandError, Err

Op = Callable[..., tuple[Any, Outcome]]


def login(model: Model, *, user_id: str, name: str, host: str, node: str = "") -> tuple[Any, Outcome]:
    model.login(name, host, user_id=user_id, node=node)
    return user_id, Outcome()


def logout(model: Model, *, user_id: str) -> tuple[Any, Outcome]:
    return None, model.logout(user_id)


def update_user_data(model: Model, *, user_id: str, patch: dict[str, Any]) -> tuple[Any, Outcome]:
    return model.update_user_data(user_id, patch)


def add_session(model: Model, *, user_id: str, session_id: str, max_sessions: int,
                **fields: Any) -> tuple[Any, Outcome]:
    if len(model.sessions) >= max_sessions:
        raise CommandError(Err.LIMIT_REACHED, f"{max_sessions} sessions (max_sessions)")
    session = model.add_session(user_id, session_id=session_id, **fields)
    return session.session_id, Outcome(changed_sessions=[session.session_id])


def join(model: Model, *, user_id: str, session_id: str, max_users: int) -> tuple[Any, Outcome]:
    session = model.sessions.get(session_id)
    if session is not None and len(session.members) >= max_users and user_id not in session.members:
        raise CommandError(Err.LIMIT_REACHED, f"{max_users} users per session (max_users_per_session)")
    session, outcome = model.join(user_id, session_id)
    return session.session_id, outcome


def leave(model: Model, *, user_id: str) -> tuple[Any, Outcome]:
    return None, model.leave(user_id)


def delete_session(model: Model, *, user_id: str, session_id: str) -> tuple[Any, Outcome]:
    return None, model.delete_session(user_id, session_id)


def close_session(model: Model, *, session_id: str) -> tuple[Any, Outcome]:
    outcome = model.close_session(session_id)
    return outcome is not None, outcome or Outcome()


def reset(model: Model) -> tuple[Any, Outcome]:
    return None, model.reset()


def message(model: Model, *, user_id: str, target: Any, message: Any) -> tuple[Any, Outcome]:
    return None, Outcome(notes=[model.message(user_id, target, message)])


def message_to_all(model: Model, *, user_id: str, message: Any) -> tuple[Any, Outcome]:
    return None, Outcome(notes=[model.message_to_all(user_id, message)])


def scene_to_master(model: Model, *, user_id: str, data: Any) -> tuple[Any, Outcome]:
    return None, Outcome(notes=[model.scene_to_master(user_id, data)])


def scene_to_user(model: Model, *, user_id: str, target: Any, data: Any) -> tuple[Any, Outcome]:
    return None, Outcome(notes=[model.scene_to_user(user_id, target, data)])


def scene_to_all(model: Model, *, user_id: str, data: Any) -> tuple[Any, Outcome]:
    return None, Outcome(notes=[model.scene_to_all(user_id, data)])


def declare_stream(model: Model, *, user_id: str, kind: str, description: str) -> tuple[Any, Outcome]:
    model.declare_stream(user_id, kind, description)
    return user_id, Outcome()


def remove_stream(model: Model, *, user_id: str, kind: str) -> tuple[Any, Outcome]:
    model.remove_stream(user_id, kind)
    return user_id, Outcome()


def subscribe(model: Model, *, user_id: str, sender: str, kind: Any) -> tuple[Any, Outcome]:
    model.subscribe(user_id, sender, kind)
    return user_id, Outcome()


def unsubscribe(model: Model, *, user_id: str, sender: str, kind: Any) -> tuple[Any, Outcome]:
    model.unsubscribe(user_id, sender, kind)
    return user_id, Outcome()


def set_worker(model: Model, *, session_id: str, worker: dict[str, Any] | None) -> tuple[Any, Outcome]:
    """A session's stream worker was restarted or replaced: its new description (cluster: sfuData)."""
    session = model.sessions.get(session_id)
    if session is not None:
        session.worker = worker
    return session is not None, Outcome()


def node_down(model: Model, *, node: str) -> tuple[Any, Outcome]:
    """A cluster process died: its users leave exactly as if they had disconnected."""
    outcome = Outcome()
    gone = [uid for uid, user in model.users.items() if user.node == node]
    for user_id in gone:
        outcome.extend(model.logout(user_id))
    return gone, outcome


OPS: dict[str, Op] = {fn.__name__: fn for fn in (
    login, logout, update_user_data, add_session, join, leave, delete_session, close_session, reset,
    message, message_to_all, scene_to_master, scene_to_user, scene_to_all,
    declare_stream, remove_stream, subscribe, unsubscribe, set_worker, node_down,
)}
