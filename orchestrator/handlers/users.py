"""Login, logout, user data, version and time."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from ..protocol import CommandError, Err, Ev
from ..version import REVISION, VERSION
from . import Context, command


@command(Ev.LOGIN, login=False)
async def login(ctx: Context) -> dict[str, Any]:
    name = ctx.data.get("userName")
    if not name:
        raise CommandError(Err.MISSING_CREDENTIALS)
    if not isinstance(name, str):
        raise CommandError(Err.INVALID_REQUEST, "userName must be a string")
    if len(name) > ctx.app.settings.max_name_length:
        raise CommandError(Err.PAYLOAD_TOO_LARGE, "userName is too long")
    ctx.app.check_accepting()
    return {"userId": await ctx.app.login(ctx.conn, name)}


@command(Ev.LOGOUT)
async def logout(ctx: Context) -> dict[str, Any]:
    await ctx.app.logout(ctx.conn)
    return {}


@command(Ev.UPDATE_USER_DATA_JSON)
async def update_user_data(ctx: Context) -> dict[str, Any]:
    raw = ctx.data.get("userDataJson")
    if not raw:
        raise CommandError(Err.USER_DATA_MISSING)
    if isinstance(raw, str):
        if len(raw) > ctx.app.settings.max_user_data_bytes:
            raise CommandError(Err.PAYLOAD_TOO_LARGE, "userDataJson is too large")
        try:
            patch = json.loads(raw)
        except ValueError as exc:
            raise CommandError(Err.INVALID_JSON, f"userDataJson: {exc}") from None
    else:
        patch = raw
    if not isinstance(patch, dict):
        raise CommandError(Err.INVALID_JSON, "userDataJson must be a JSON object")
    merged_size = len(json.dumps({**ctx.app.model.user(ctx.user_id).user_data, **patch}))
    if merged_size > ctx.app.settings.max_user_data_bytes:
        raise CommandError(Err.PAYLOAD_TOO_LARGE, "user data is too large")
    return await ctx.app.apply("update_user_data", user_id=ctx.user_id, patch=patch)


@command(Ev.GET_USER_DATA)
async def get_user_data(ctx: Context) -> dict[str, Any]:
    target = ctx.field("userId", str, required=False) or ctx.user_id
    return ctx.app.model.user(target).user_data


@command(Ev.GET_ORCHESTRATOR_VERSION, login=False)
async def get_version(ctx: Context) -> dict[str, Any]:
    return {"orchestratorVersion": VERSION, "revision": REVISION}


@command(Ev.GET_NTP_TIME, login=False)
async def get_ntp_time(ctx: Context) -> dict[str, Any]:
    now_ms = ctx.app.clock.now_ms()
    if now_ms is None:
        raise CommandError(Err.NTP_ERROR)
    iso = datetime.fromtimestamp(now_ms / 1000, UTC).isoformat(timespec="milliseconds")
    return {"ntpDate": iso.replace("+00:00", "Z"), "ntpTimeMs": now_ms}
