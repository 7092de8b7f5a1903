"""Running the orchestrator: uvicorn configured for this workload, and the process's exit code."""

from __future__ import annotations

import logging

import uvicorn

from .logs import setup as setup_logging
from .server import App
from .settings import Settings

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
        timeout_graceful_shutdown=5,
    )


def build_app(settings: Settings) -> App:
    return App(settings, streams=load_streams(settings))


def load_streams(settings: Settings):  # type: ignore[no-untyped-def]
    """The stream supervisor for `settings.config`, or None when stream workers are not configured."""
    try:
        from .streams.adapter import supervisor_for
    except ImportError:
        return None
    return supervisor_for(settings)


def serve(settings: Settings) -> int:
    setup_logging(settings.log_level, settings.log_format)
    app = build_app(settings)
    server = uvicorn.Server(uvicorn_config(app, settings))

    def stop() -> None:
        server.should_exit = True

    app.stop_requested = stop
    log.info("orchestrator listening on %s:%d", settings.host, settings.port)
    server.run()
    return app.exit_code
