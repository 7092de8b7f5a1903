"""Operator commands: they reveal or destroy everyone's state, so only an operator may call them."""

from __future__ import annotations

from typing import Any

from ..protocol import Ev
from . import Context, command


@command(Ev.DUMP_DATA, login=False, operator=True)
async def dump_data(ctx: Context) -> dict[str, Any]:
    return ctx.app.dump()


@command(Ev.RESET_ORCHESTRATOR, login=False, operator=True)
async def reset(ctx: Context) -> dict[str, Any]:
    ctx.after_ack.append(ctx.app.schedule_reset)
    return {}


@command(Ev.TERMINATE_ORCHESTRATOR, login=False, operator=True)
async def terminate(ctx: Context) -> dict[str, Any]:
    ctx.after_ack.append(ctx.app.schedule_terminate)
    return {}
