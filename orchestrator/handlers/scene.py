"""Scene events: opaque (usually binary) payloads to the master, or from the master to members.

These are events without ack: bad input is dropped and counted. A client that does ask for an ack
gets the envelope, errors included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..protocol import Ev
from . import event

if TYPE_CHECKING:
    from ..server import App, Conn


def _arg(args: tuple[Any, ...], index: int) -> Any:
    return args[index] if len(args) > index else None


@event(Ev.SEND_SCENE_EVENT_TO_MASTER)
async def to_master(app: App, conn: Conn, args: tuple[Any, ...]) -> None:
    await app.apply("scene_to_master", user_id=conn.require_user(), data=_arg(args, 0))


@event(Ev.SEND_SCENE_EVENT_TO_USER)
async def to_user(app: App, conn: Conn, args: tuple[Any, ...]) -> None:
    await app.apply("scene_to_user", user_id=conn.require_user(), target=_arg(args, 0), data=_arg(args, 1))


@event(Ev.SEND_SCENE_EVENT_TO_ALL_USERS)
async def to_all(app: App, conn: Conn, args: tuple[Any, ...]) -> None:
    await app.apply("scene_to_all", user_id=conn.require_user(), data=_arg(args, 0))
