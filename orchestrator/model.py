"""Users, sessions, streams and subscriptions, and the session rules. Pure: no I/O.

Every state change goes through a method of `Model`, which returns the events it causes as
`Note`s for the caller to deliver. Keeping the rules here, behind one narrow interface, is what
lets handlers stay thin and lets another store back the same rules later.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .protocol import CommandError, Err, Ev, SessionEvent


@dataclass(slots=True)
class User:
    user_id: str
    name: str
    host: str = ""  # the host this user used to reach us: sfuData URLs are rendered with it
    node: str = ""  # the orchestrator process this user is connected to (several in a cluster)
    user_data: dict[str, Any] = field(default_factory=dict)
    session_id: str | None = None
    # Set when the session was closed under this user (admin gone): its next LeaveSession answers OK.
    orphaned_from: str | None = None
    streams: dict[str, str] = field(default_factory=dict)  # kind -> description
    subscriptions: dict[str, tuple[str, str]] = field(default_factory=dict)  # "<uid>::<kind>" -> (uid, kind)


@dataclass(slots=True)
class Session:
    session_id: str
    name: str
    description: str
    protocol: str
    admin_id: str
    scenario_id: Any
    scenario_name: Any
    scenario_description: Any
    members: list[str] = field(default_factory=list)  # join order is part of the contract
    master_id: str | None = None
    worker: dict[str, Any] | None = None  # the stream worker serving it, for sfuData on any process


@dataclass(slots=True, frozen=True)
class Note:
    """One event to deliver: to these users, this event name, these positional arguments."""

    to: tuple[str, ...]
    event: str
    args: tuple[Any, ...]


@dataclass(slots=True)
class Outcome:
    """What a state change caused: events to deliver now, and sessions that no longer exist."""

    notes: list[Note] = field(default_factory=list)
    closed_sessions: list[str] = field(default_factory=list)
    changed_sessions: list[str] = field(default_factory=list)  # membership changed: worker load to update

    def extend(self, other: Outcome) -> None:
        self.notes.extend(other.notes)
        self.closed_sessions.extend(other.closed_sessions)
        self.changed_sessions.extend(other.changed_sessions)


SfuRenderer = Callable[[Session, User], dict[str, str]]


def empty_sfu_data(session: Session, user: User) -> dict[str, str]:
    return {"url_gen": "", "url_audio": "", "url_pcc": ""}


def _scene_payload(data: Any) -> Any:
    """Scene payloads are opaque (bytes from Unity); only absence is an error."""
    if data is None or data == b"" or data == "":
        raise CommandError(Err.SCENE_NO_DATA)
    return data


def _stream_kind(kind: Any) -> str:
    if not kind or not isinstance(kind, str):
        raise CommandError(Err.STREAM_MISSING_KIND)
    return kind


def subscription_key(user_id: str, kind: str) -> str:
    return f"{user_id}::{kind}"


class Model:
    """All orchestrator state. Methods validate against the session rules and raise CommandError."""

    def __init__(self, sfu_data: SfuRenderer = empty_sfu_data) -> None:
        self.sfu_data = sfu_data
        self.users: dict[str, User] = {}
        self.sessions: dict[str, Session] = {}
        # (sender id, stream kind) -> ids of users subscribed to it; the SendData hot path reads only this.
        self._subscribers: dict[tuple[str, str], set[str]] = {}

    # -- lookups -----------------------------------------------------------------------------

    def user(self, user_id: str) -> User:
        user = self.users.get(user_id)
        if user is None:
            raise CommandError(Err.USER_NOT_FOUND)
        return user

    def session_of(self, user: User) -> Session:
        if user.session_id is None:
            raise CommandError(Err.NOT_IN_ANY_SESSION)
        return self.sessions[user.session_id]

    def administered_by(self, user_id: str) -> list[Session]:
        return [s for s in self.sessions.values() if s.admin_id == user_id]

    # -- serialisation -----------------------------------------------------------------------

    def user_dict(self, user: User) -> dict[str, Any]:
        session = self.sessions.get(user.session_id) if user.session_id else None
        return {
            "userId": user.user_id,
            "userName": user.name,
            "userData": user.user_data,
            "sfuData": self.sfu_data(session, user) if session else {},
        }

    def session_dict(self, session: Session, *, with_definitions: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "sessionId": session.session_id,
            "sessionName": session.name,
            "sessionDescription": session.description,
            "sessionAdministrator": session.admin_id,
        }
        if session.master_id is not None:
            out["sessionMaster"] = session.master_id
        out["scenarioId"] = session.scenario_id
        out["sessionUsers"] = list(session.members)
        if with_definitions:
            out["sessionUserDefinitions"] = [self.user_dict(self.users[uid]) for uid in session.members]
        out["sessionProtocol"] = session.protocol
        return out

    def sessions_dict(self) -> dict[str, dict[str, Any]]:
        return {sid: self.session_dict(s) for sid, s in self.sessions.items()}

    def stream_info(self, user: User) -> dict[str, Any]:
        """The body of every data-stream ack: own declared streams and own subscriptions."""
        return {
            "dataStreams": {
                kind: {"dataStreamKind": kind, "dataSteamDescription": desc, "dataStreamDescription": desc}
                for kind, desc in user.streams.items()
            },
            "remoteDataStreams": {
                key: {"dataStreamUserId": uid, "dataStreamKind": kind, "dataStreamDescription": ""}
                for key, (uid, kind) in user.subscriptions.items()
            },
            "connectionId": user.user_id,
            "connectionLoggedAs": user.user_id,
        }

    def dump(self) -> dict[str, Any]:
        return {
            "sessions": [self.session_dict(s, with_definitions=False) for s in self.sessions.values()],
            "users": [self.user_dict(u) for u in self.users.values()],
        }

    # -- users -------------------------------------------------------------------------------

    def login(self, name: str, host: str = "", *, user_id: str | None = None, node: str = "") -> User:
        """Every login is a new user, even with a name already in use (v2 merged them and hung the client)."""
        user = User(user_id=user_id or str(uuid.uuid4()), name=name, host=host, node=node)
        self.users[user.user_id] = user
        return user

    def logout(self, user_id: str) -> Outcome:
        """Leave the session, close the sessions this user administers, forget the user."""
        user = self.users.get(user_id)
        if user is None:
            return Outcome()
        outcome = Outcome()
        if user.session_id is not None:
            outcome.extend(self._remove_member(self.sessions[user.session_id], user))
        for session in self.administered_by(user_id):
            outcome.extend(self._close(session))
        self._drop_user_streams(user)
        del self.users[user_id]
        return outcome

    def update_user_data(self, user_id: str, patch: dict[str, Any]) -> tuple[dict[str, Any], Outcome]:
        user = self.user(user_id)
        user.user_data = {**user.user_data, **patch}
        outcome = Outcome()
        if user.session_id is not None:
            session = self.sessions[user.session_id]
            event = {"eventId": SessionEvent.USER_DATA_UPDATED,
                     "eventData": {"userId": user_id, "userData": user.user_data}}
            outcome.notes.append(Note(tuple(session.members), Ev.SESSION_UPDATED, (event,)))
        return user.user_data, outcome

    # -- sessions ----------------------------------------------------------------------------

    def add_session(self, admin_id: str, *, name: str, description: str, protocol: str,
                    scenario_id: Any, scenario_name: Any, scenario_description: Any,
                    session_id: str | None = None, worker: dict[str, Any] | None = None) -> Session:
        """Create a session with its creator as administrator and first member."""
        admin = self.user(admin_id)
        if admin.session_id is not None:
            raise CommandError(Err.ALREADY_IN_OTHER_SESSION)
        session = Session(
            session_id=session_id or str(uuid.uuid4()), name=name, description=description, protocol=protocol,
            admin_id=admin_id, scenario_id=scenario_id, scenario_name=scenario_name,
            scenario_description=scenario_description, worker=worker,
        )
        self.sessions[session.session_id] = session
        self._add_member(session, admin)
        return session

    def join(self, user_id: str, session_id: str) -> tuple[Session, Outcome]:
        user = self.user(user_id)
        session = self.sessions.get(session_id)
        if session is None:
            raise CommandError(Err.SESSION_NOT_FOUND)
        if user.session_id == session_id:
            raise CommandError(Err.ALREADY_IN_THIS_SESSION)
        if user.session_id is not None:
            raise CommandError(Err.ALREADY_IN_OTHER_SESSION)
        outcome = Outcome(changed_sessions=[session_id])
        if session.members:
            # The joiner's full User, to the members already present (never to the joiner itself).
            event = {"eventId": SessionEvent.USER_JOINED,
                     "eventData": {"userId": user_id, "userData": None}}
            self._add_member(session, user)
            event["eventData"]["userData"] = self.user_dict(user)
            outcome.notes.append(Note(tuple(session.members[:-1]), Ev.SESSION_UPDATED, (event,)))
        else:
            self._add_member(session, user)
        return session, outcome

    def leave(self, user_id: str) -> Outcome:
        user = self.user(user_id)
        if user.session_id is None:
            if user.orphaned_from is not None:
                user.orphaned_from = None  # the admin closed it under us: leaving is already done
                return Outcome()
            raise CommandError(Err.NOT_IN_ANY_SESSION)
        return self._remove_member(self.sessions[user.session_id], user)

    def session_info(self, user_id: str) -> Session:
        user = self.user(user_id)
        if user.session_id is not None:
            return self.sessions[user.session_id]
        administered = self.administered_by(user_id)
        if not administered:
            raise CommandError(Err.NOT_JOINED_ANY_SESSION)
        return administered[0]

    def delete_session(self, user_id: str, session_id: str) -> Outcome:
        session = self.sessions.get(session_id)
        if session is None:
            raise CommandError(Err.SESSION_NOT_FOUND)
        if session.admin_id != user_id:
            raise CommandError(Err.NOT_SESSION_ADMIN)
        if session.members:
            raise CommandError(Err.SESSION_NOT_EMPTY)
        return self._close(session)

    def close_session(self, session_id: str) -> Outcome | None:
        """Close a session whatever its state (operator action); None if there is no such session."""
        session = self.sessions.get(session_id)
        return None if session is None else self._close(session)

    def reset(self) -> Outcome:
        """Close every session and forget every user (operator command)."""
        outcome = Outcome()
        for session in list(self.sessions.values()):
            outcome.extend(self._close(session))
        self.users.clear()
        self._subscribers.clear()
        return outcome

    # -- messages and scene events -----------------------------------------------------------

    def message(self, sender_id: str, target_id: Any, message: Any) -> Note:
        sender = self.user(sender_id)
        session = self.session_of(sender)
        if not isinstance(target_id, str) or target_id not in session.members:
            raise CommandError(Err.TARGET_NOT_IN_SAME_SESSION)
        return Note((target_id,), Ev.MESSAGE_SENT, (self._message_body(sender, message),))

    def message_to_all(self, sender_id: str, message: Any) -> Note:
        sender = self.user(sender_id)
        session = self.session_of(sender)
        return Note(tuple(session.members), Ev.MESSAGE_SENT, (self._message_body(sender, message),))

    @staticmethod
    def _message_body(sender: User, message: Any) -> dict[str, Any]:
        return {"messageFrom": sender.user_id, "messageFromName": sender.name, "message": message}

    def scene_to_master(self, sender_id: str, data: Any) -> Note:
        session = self.session_of(self.user(sender_id))
        data = _scene_payload(data)
        if session.master_id is None:
            raise CommandError(Err.SCENE_NO_MASTER)
        return Note((session.master_id,), Ev.SCENE_EVENT_TO_MASTER,
                    ({"sceneEventFrom": sender_id, "sceneEventData": data},))

    def scene_to_user(self, sender_id: str, target_id: Any, data: Any) -> Note:
        session = self.require_master(sender_id)
        if not target_id or not isinstance(target_id, str):
            raise CommandError(Err.SCENE_NO_TARGET)
        if target_id not in session.members:
            raise CommandError(Err.NOT_JOINED_ANY_SESSION)
        data = _scene_payload(data)
        return Note((target_id,), Ev.SCENE_EVENT_TO_USER,
                    ({"sceneEventFrom": sender_id, "sceneEventData": data},))

    def scene_to_all(self, sender_id: str, data: Any) -> Note:
        session = self.require_master(sender_id)
        data = _scene_payload(data)
        return Note(tuple(session.members), Ev.SCENE_EVENT_TO_USER,
                    ({"sceneEventFrom": sender_id, "sceneEventData": data},))

    def require_master(self, user_id: str) -> Session:
        session = self.session_of(self.user(user_id))
        if session.master_id != user_id:
            raise CommandError(Err.SCENE_NOT_MASTER)
        return session

    # -- data streams ------------------------------------------------------------------------

    def declare_stream(self, user_id: str, kind: str, description: str) -> User:
        user = self.user(user_id)
        self.session_of(user)
        user.streams[kind] = description
        return user

    def remove_stream(self, user_id: str, kind: str) -> User:
        user = self.user(user_id)
        self.session_of(user)
        user.streams.pop(kind, None)
        return user

    def subscribe(self, user_id: str, sender_id: str, kind: Any) -> User:
        user = self.user(user_id)
        session = self.session_of(user)
        if sender_id not in session.members:
            raise CommandError(Err.NOT_JOINED_ANY_SESSION)
        kind = _stream_kind(kind)
        user.subscriptions[subscription_key(sender_id, kind)] = (sender_id, kind)
        self._subscribers.setdefault((sender_id, kind), set()).add(user_id)
        return user

    def unsubscribe(self, user_id: str, sender_id: str, kind: Any) -> User:
        """Accepts the sender's id or, as the Unity client sends, the caller's own id."""
        user = self.user(user_id)
        session = self.session_of(user)
        if sender_id != user_id and sender_id not in session.members:
            raise CommandError(Err.NOT_JOINED_ANY_SESSION)
        kind = _stream_kind(kind)
        if sender_id == user_id and subscription_key(sender_id, kind) not in user.subscriptions:
            targets = [(uid, k) for uid, k in user.subscriptions.values() if k == kind]
        else:
            targets = [(sender_id, kind)]
        for uid, k in targets:
            self._unsubscribe(user, uid, k)
        return user

    def data_recipients(self, sender_id: str, kind: str) -> Iterable[str]:
        """Members of the sender's session subscribed to (sender, kind). The SendData hot path."""
        subscribers = self._subscribers.get((sender_id, kind))
        if not subscribers:
            return ()
        users = self.users
        session_id = users[sender_id].session_id
        return [uid for uid in subscribers if users[uid].session_id == session_id]

    def _unsubscribe(self, user: User, sender_id: str, kind: str) -> None:
        user.subscriptions.pop(subscription_key(sender_id, kind), None)
        subscribers = self._subscribers.get((sender_id, kind))
        if subscribers is not None:
            subscribers.discard(user.user_id)
            if not subscribers:
                del self._subscribers[(sender_id, kind)]

    def _drop_user_streams(self, user: User) -> None:
        """Forget the user's subscriptions and everyone's subscriptions to the user's streams."""
        for sender_id, kind in list(user.subscriptions.values()):
            self._unsubscribe(user, sender_id, kind)
        for key in [k for k in self._subscribers if k[0] == user.user_id]:
            for subscriber_id in self._subscribers.pop(key):
                subscriber = self.users.get(subscriber_id)
                if subscriber is not None:
                    subscriber.subscriptions.pop(subscription_key(*key), None)
        user.streams.clear()

    # -- membership internals ----------------------------------------------------------------

    def _add_member(self, session: Session, user: User) -> None:
        session.members.append(user.user_id)
        user.session_id = session.session_id
        user.orphaned_from = None
        if session.master_id is None:
            session.master_id = user.user_id

    def _remove_member(self, session: Session, user: User) -> Outcome:
        """The member leaves: master re-elected, remaining members told (after the leaver's ack)."""
        session.members.remove(user.user_id)
        user.session_id = None
        self._drop_user_streams(user)
        if session.master_id == user.user_id:
            session.master_id = session.members[0] if session.members else None
        outcome = Outcome(changed_sessions=[session.session_id])
        if session.members:
            event = {"eventId": SessionEvent.USER_LEFT, "eventData": {"userId": user.user_id}}
            outcome.notes.append(Note(tuple(session.members), Ev.SESSION_UPDATED, (event,)))
        return outcome

    def _close(self, session: Session) -> Outcome:
        """Remove the session; its members get SessionClosed once and may then LeaveSession with OK."""
        del self.sessions[session.session_id]
        members = tuple(session.members)
        for uid in members:
            member = self.users[uid]
            member.session_id = None
            member.orphaned_from = session.session_id
            self._drop_user_streams(member)
        session.members.clear()
        outcome = Outcome(closed_sessions=[session.session_id])
        if members:
            outcome.notes.append(Note(members, Ev.SESSION_CLOSED, ({},)))
        return outcome
