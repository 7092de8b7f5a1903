"""Scene events: opaque (usually binary) payloads to the master, or from the master to members.

These are events without ack: bad input is dropped and counted. A client that does ask for an ack
gets the envelope, errors included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..protocol import CommandError, Err, Ev
from . import event

if TYPE_CHECKING:
    from ..server import App, Conn


def _payload(value: Any) -> Any:
    if value is None or value == b"" or value == "":
        raise CommandError(Err.SCENE_NO_DATA)
    return value


@event(Ev.SEND_SCENE_EVENT_TO_MASTER)
async def to_master(app: App, conn: Conn, args: tuple[Any, ...]) -> None:
    data = _payload(args[0] if args else None)
    app.delivery.deliver([app.model.scene_to_master(conn.require_user(), data)])


@event(Ev.SEND_SCENE_EVENT_TO_USER)
async def to_user(app: App, conn: Conn, args: tuple[Any, ...]) -> None:
    user_id = conn.require_user()
    app.model.require_master(user_id)
    target = args[0] if args else None
    note = app.model.scene_to_user(user_id, target, _payload(args[1] if len(args) > 1 else None))
    app.delivery.deliver([note])


@event(Ev.SEND_SCENE_EVENT_TO_ALL_USERS)
async def to_all(app: App, conn: Conn, args: tuple[Any, ...]) -> None:
    user_id = conn.require_user()
    app.model.require_master(user_id)
    note = app.model.scene_to_all(user_id, _payload(args[0] if args else None))
    app.delivery.deliver([note])
