"""Creating, joining, leaving, inspecting and deleting sessions."""

from __future__ import annotations

from typing import Any

from ..protocol import CommandError, Err, Ev
from . import Context, command


@command(Ev.GET_SESSIONS)
async def get_sessions(ctx: Context) -> dict[str, Any]:
    return ctx.app.model.sessions_dict()


@command(Ev.ADD_SESSION)
async def add_session(ctx: Context) -> dict[str, Any]:
    try:
        name = ctx.field("sessionName", str).strip()
        description = ctx.field("sessionDescription", str, required=False, default="")
        protocol = ctx.field("sessionProtocol", str, required=False, default="socketio")
        scenario = ctx.field("scenarioDefinition", dict)
    except CommandError as exc:
        ctx.app.log_refusal(ctx, exc)
        raise CommandError(Err.SESSION_ADD_FAILED) from None
    limit = ctx.app.settings.max_name_length
    if len(name) > limit or len(description) > 16 * limit or len(protocol) > limit:
        raise CommandError(Err.PAYLOAD_TOO_LARGE, "session name, description or protocol too long")
    ctx.app.check_accepting()
    session = await ctx.app.add_session(
        ctx.conn, name=name, description=description, protocol=protocol,
        scenario_id=scenario.get("scenarioId"), scenario_name=scenario.get("scenarioName"),
        scenario_description=scenario.get("scenarioDescription"),
    )
    return ctx.app.model.session_dict(session)


@command(Ev.JOIN_SESSION)
async def join_session(ctx: Context) -> dict[str, Any]:
    session_id = ctx.field("sessionId", str, missing=Err.SESSION_NOT_FOUND)
    # USER_JOINED_SESSION goes out before the joiner's ack.
    await ctx.app.apply("join", user_id=ctx.user_id, session_id=session_id,
                        max_users=ctx.app.settings.max_users_per_session)
    return ctx.app.model.session_dict(ctx.app.model.sessions[session_id])


@command(Ev.LEAVE_SESSION)
async def leave_session(ctx: Context) -> dict[str, Any]:
    await ctx.app.apply("leave", user_id=ctx.user_id, defer=True)  # USER_LEFT_SESSION after the ack
    return {}


@command(Ev.GET_SESSION_INFO)
async def get_session_info(ctx: Context) -> dict[str, Any]:
    return ctx.app.model.session_dict(ctx.app.model.session_info(ctx.user_id))


@command(Ev.DELETE_SESSION)
async def delete_session(ctx: Context) -> dict[str, Any]:
    session_id = ctx.field("sessionId", str, missing=Err.SESSION_NOT_FOUND)
    await ctx.app.apply("delete_session", user_id=ctx.user_id, session_id=session_id)
    return {}
