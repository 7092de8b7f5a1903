"""Data streams relayed by the orchestrator itself: declarations, subscriptions and SendData.

SendData is the hot path: it touches only the subscriber index and hands the frame, encoded
once, to the delivery layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..protocol import CommandError, Err, Ev, envelope
from . import event

if TYPE_CHECKING:
    from ..server import App, Conn

OK_EMPTY = envelope(Err.OK)


def _kind(args: tuple[Any, ...], index: int) -> str:
    kind = args[index] if len(args) > index else None
    if not kind or not isinstance(kind, str):
        raise CommandError(Err.STREAM_MISSING_KIND)
    return kind


def _sender(args: tuple[Any, ...]) -> str:
    sender = args[0] if args else None
    if not sender or not isinstance(sender, str):
        raise CommandError(Err.STREAM_MISSING_USER)
    return sender


def _in_session(app: App, conn: Conn) -> str:
    user_id = conn.require_user()
    app.model.session_of(app.model.user(user_id))
    return user_id


@event(Ev.DECLARE_DATA_STREAM)
async def declare(app: App, conn: Conn, args: tuple[Any, ...]) -> dict[str, Any]:
    user_id = _in_session(app, conn)
    description = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
    await app.apply("declare_stream", user_id=user_id, kind=_kind(args, 0), description=description)
    return app.stream_ack_body(app.model.users[user_id])


@event(Ev.REMOVE_DATA_STREAM)
async def remove(app: App, conn: Conn, args: tuple[Any, ...]) -> dict[str, Any]:
    user_id = _in_session(app, conn)
    await app.apply("remove_stream", user_id=user_id, kind=_kind(args, 0))
    return app.stream_ack_body(app.model.users[user_id])


@event(Ev.REGISTER_FOR_DATA_STREAM)
async def register(app: App, conn: Conn, args: tuple[Any, ...]) -> dict[str, Any]:
    user_id = _in_session(app, conn)
    sender = _sender(args)
    await app.apply("subscribe", user_id=user_id, sender=sender, kind=args[1] if len(args) > 1 else None)
    return app.stream_ack_body(app.model.users[user_id])


@event(Ev.UNREGISTER_FROM_DATA_STREAM)
async def unregister(app: App, conn: Conn, args: tuple[Any, ...]) -> dict[str, Any]:
    user_id = _in_session(app, conn)
    sender = _sender(args)
    await app.apply("unsubscribe", user_id=user_id, sender=sender, kind=args[1] if len(args) > 1 else None)
    return app.stream_ack_body(app.model.users[user_id])


@event(Ev.SEND_DATA)
def send_data(app: App, conn: Conn, args: tuple[Any, ...]) -> dict[str, Any]:
    user_id = conn.user_id
    if user_id is None:
        raise CommandError(Err.NOT_LOGGED_IN)
    if len(args) < 2 or not isinstance(args[0], str) or not args[0]:
        raise CommandError(Err.STREAM_MISSING_KIND)
    payload = args[1]
    if not isinstance(payload, bytes | str):
        raise CommandError(Err.INVALID_REQUEST, "data must be bytes")
    stats = app.stats
    stats.data_frames_in += 1
    stats.bytes_in += len(payload)
    if not conn.data.take(len(payload)):
        stats.data_dropped["rate_limited"] += 1
        raise CommandError(Err.RATE_LIMITED, "data byte budget exceeded")
    recipients = app.model.data_recipients(user_id, args[0])
    if recipients:
        elsewhere = app.delivery.send_data(recipients, Ev.DATA_RECEIVED, (user_id, args[0], payload),
                                           len(payload))
        if elsewhere and app.cluster is not None:
            app.cluster.forward_data(elsewhere, user_id, args[0], payload)
    return OK_EMPTY
