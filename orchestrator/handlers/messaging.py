"""Text messages between session members."""

from __future__ import annotations

import json
from typing import Any

from ..protocol import CommandError, Err, Ev
from . import Context, command


def _message(ctx: Context) -> Any:
    if "message" not in ctx.data:
        raise CommandError(Err.INVALID_REQUEST, "message is required")
    message = ctx.data["message"]
    size = len(message) if isinstance(message, str) else len(json.dumps(message))
    if size > ctx.app.settings.max_message_bytes:
        raise CommandError(Err.PAYLOAD_TOO_LARGE, "message is too large")
    return message


@command(Ev.SEND_MESSAGE)
async def send_message(ctx: Context) -> dict[str, Any]:
    ctx.app.model.session_of(ctx.app.model.user(ctx.user_id))
    await ctx.app.apply("message", user_id=ctx.user_id, target=ctx.data.get("userId"), message=_message(ctx))
    return {}


@command(Ev.SEND_MESSAGE_TO_ALL)
async def send_message_to_all(ctx: Context) -> dict[str, Any]:
    ctx.app.model.session_of(ctx.app.model.user(ctx.user_id))
    await ctx.app.apply("message_to_all", user_id=ctx.user_id, message=_message(ctx))
    return {}
