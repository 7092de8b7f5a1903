"""Running the orchestrator: uvicorn configured for this workload, signals, drain and exit code.

SIGTERM (or SIGINT) starts a drain: /readyz turns 503, new logins and sessions are refused with
5008, members of live sessions are told (SessionUpdated ORCHESTRATOR_DRAINING), and the server
waits up to `drain_grace_s` for the sessions to end; then it stops its workers and exits 0.
A second signal stops at once, still stopping the workers.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType

import uvicorn
from uvicorn._compat import asyncio_run

from .logs import add_handler as add_log_handler
from .logs import setup as setup_logging
from .server import App
from .settings import Settings
from .streams_port import StreamsPort

log = logging.getLogger("orchestrator")


def uvicorn_config(app: App, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        # Point clouds are already compressed: deflate would cost CPU and gain nothing.
        ws_per_message_deflate=False,
        ws_max_size=settings.max_http_buffer_size + 1024,
        lifespan="on",
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=3,
    )


class OrchestratorServer(uvicorn.Server):
    """uvicorn's server with a drain on the first signal instead of an immediate stop."""

    def __init__(self, config: uvicorn.Config, app: App) -> None:
        super().__init__(config)
        self.app = app
        self.loop: asyncio.AbstractEventLoop | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not recorded in _captured_signals: uvicorn would re-raise it at exit and lose our exit code.
        if self.app.draining or self.should_exit or self.loop is None:
            log.warning("%s: stopping now", signal.Signals(sig).name)
            self.should_exit = True
            self.force_exit = True
            return
        log.warning("%s: draining (grace %.0f s; send it again to stop now)",
                    signal.Signals(sig).name, self.app.settings.drain_grace_s)
        self.loop.call_soon_threadsafe(lambda: self.loop.create_task(self._drain_then_exit()))

    async def _drain_then_exit(self) -> None:
        await self.app.drain()
        self.should_exit = True

    async def serve(self, sockets: list | None = None) -> None:  # type: ignore[type-arg]
        self.loop = asyncio.get_running_loop()
        try:
            await super().serve(sockets)
        finally:
            await self.app.shutdown()  # idempotent; uvicorn skips the lifespan on a forced stop


def build_app(settings: Settings) -> App:
    app = App(settings, streams=load_streams(settings))
    if settings.state != "memory":
        from .cluster import cluster_for  # only clusters need Redis
        app.cluster = cluster_for(settings)
    return app


def load_streams(settings: Settings) -> StreamsPort | None:
    """The stream supervisor for `settings.config`, or None when stream workers are not configured."""
    from .stream_workers import streams_for
    return streams_for(settings)


def serve(settings: Settings) -> int:
    from .streams.config import ConfigError
    setup_logging(settings.log_level, settings.log_format)
    try:
        app = build_app(settings)
    except ConfigError as exc:
        log.error("invalid stream worker configuration, not starting:\n%s", "\n".join(exc.errors))
        return 2
    add_log_handler(app.logtail)
    config = uvicorn_config(app, settings)
    server = OrchestratorServer(config, app)
    app.stop_requested = lambda: setattr(server, "should_exit", True)
    log.info("orchestrator starting on %s:%d", settings.host, settings.port)
    asyncio_run(server.serve(), loop_factory=config.get_loop_factory())
    if not server.started:
        return 1
    return app.exit_code
