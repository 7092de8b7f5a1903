"""Command and event handlers, one module per area, registered in two tables.

A command handler takes a `Context` and returns the ack body (or raises CommandError); the
dispatcher in server.py wraps it in the envelope, echoes `commandId`, counts it and turns any
crash into an error ack. An event handler (no ack expected) takes the raw positional arguments.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..protocol import CommandError, Err

if TYPE_CHECKING:
    from ..server import App, Conn


@dataclass(slots=True)
class Context:
    app: App
    conn: Conn
    data: dict[str, Any]
    # Work to do after the ack has been queued (e.g. USER_LEFT_SESSION follows the leaver's ack).
    after_ack: list[Callable[[], None]] = field(default_factory=list)

    @property
    def user_id(self) -> str:
        if self.conn.user_id is None:
            raise CommandError(Err.NOT_LOGGED_IN)
        return self.conn.user_id

    def field(self, name: str, kind: type | tuple[type, ...], *, missing: Err = Err.INVALID_REQUEST,
              required: bool = True, default: Any = None) -> Any:
        """A typed field of the command's data; wrong type → INVALID_REQUEST, absent → `missing`."""
        value = self.data.get(name)
        if value is None:
            if required:
                raise CommandError(missing, f"{name} is required")
            return default
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
            raise CommandError(Err.INVALID_REQUEST, f"{name} has the wrong type")
        return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


CommandFn = Callable[[Context], Awaitable[dict[str, Any]]]
# An event handler; a synchronous one (for hot events such as SendData) may run as soon as the
# event is parsed, before the connection's reader sees it.
EventFn = Callable[["App", "Conn", tuple[Any, ...]], Awaitable[dict[str, Any] | None] | dict[str, Any] | None]


@dataclass(frozen=True, slots=True)
class CommandSpec:
    fn: CommandFn
    login: bool  # requires a logged-in user
    operator: bool  # requires operator rights


COMMANDS: dict[str, CommandSpec] = {}
EVENTS: dict[str, EventFn] = {}


def command(name: str, *, login: bool = True, operator: bool = False) -> Callable[[CommandFn], CommandFn]:
    def register(fn: CommandFn) -> CommandFn:
        COMMANDS[name] = CommandSpec(fn, login, operator)
        return fn
    return register


def event(name: str) -> Callable[[EventFn], EventFn]:
    def register(fn: EventFn) -> EventFn:
        EVENTS[name] = fn
        return fn
    return register


def load_all() -> None:
    """Import every handler module so that its decorators fill the tables."""
    from . import messaging, operator, scene, sessions, streams, users  # noqa: F401
