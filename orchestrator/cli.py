"""`orchestrator serve | check-config | dump | logs | terminate`.

Every `serve` option can also be set by an environment variable named ORCHESTRATOR_<OPTION>
(upper case, dashes as underscores); a command-line option wins over the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from .settings import Settings

ENV_PREFIX = "ORCHESTRATOR_"

# option name -> (type, help); names match Settings fields.
SERVE_OPTIONS: dict[str, tuple[Any, str]] = {
    "host": (str, "address to listen on"),
    "port": (int, "port to listen on"),
    "log_level": (str, "debug | info | warning | error"),
    "log_format": (str, "text (for terminals) | json (one object per line, for containers)"),
    "config": (Path, "stream worker configuration (config/streams.yaml); may be absent"),
    "max_http_buffer_size": (int, "largest Engine.IO message in bytes (Unity frames reach 1,000,008)"),
    "cors_origins": (list, "comma-separated allowed browser origins, * for any"),
    "ping_interval_s": (float, "Engine.IO ping interval"),
    "ping_timeout_s": (float, "Engine.IO ping timeout"),
    "operator_token": (str, "token that grants operator commands; unset = trusted networks only"),
    "trusted_networks": (list, "comma-separated networks whose peers are operators when no token is set"),
    "ntp_servers": (list, "comma-separated NTP sources in order of preference; 'localtime' = system clock"),
    "ntp_timeout_s": (float, "timeout of one NTP query"),
    "ntp_refresh_s": (float, "how often the NTP offset is refreshed"),
    "data_queue_frames": (int, "data frames that may wait per recipient before the oldest is dropped"),
    "data_queue_bytes": (int, "data bytes that may wait per recipient before the oldest frame is dropped"),
    "data_max_age_s": (float, "seconds a data frame may wait for a recipient before newer ones replace it"),
    "max_outgoing_bytes": (int, "bytes waiting for one client beyond which it is disconnected"),
    "max_message_bytes": (int, "largest SendMessage/SendMessageToAll message"),
    "max_user_data_bytes": (int, "largest userData (JSON)"),
    "max_name_length": (int, "longest user or session name"),
    "max_connections": (int, "simultaneous connections; more are refused at connect"),
    "max_sessions": (int, "sessions; AddSession beyond it answers 5009"),
    "max_users_per_session": (int, "members of one session; JoinSession beyond it answers 5009"),
    "command_rate": (float, "commands and non-data events per second per connection (5006 beyond)"),
    "command_burst": (int, "commands a connection may send at once before command_rate applies"),
    "data_rate_bytes": (float, "SendData bytes per second per connection (dropped beyond)"),
    "data_burst_bytes": (int, "SendData bytes a connection may send at once before data_rate_bytes applies"),
    "abuse_limit": (int, "refused inputs within abuse_window_s that disconnect a client"),
    "abuse_window_s": (float, "window of abuse_limit"),
    "state": (str, "memory, or redis://HOST:PORT/DB to run several processes as one orchestrator"),
    "node_heartbeat_s": (float, "cluster: how often this process announces it is alive"),
    "node_timeout_s": (float, "cluster: silence after which a process counts as dead (its users removed)"),
    "run_dir": (Path, "directory for pid files of stream workers"),
    "log_dir": (Path, "directory for per-worker log files (unset = no files)"),
    "drain_grace_s": (float, "on SIGTERM, how long live sessions may continue before the stop"),
}


def _convert(kind: Any, raw: str) -> Any:
    if kind is list:
        return [item.strip() for item in raw.split(",") if item.strip()]
    return kind(raw)


def settings_from(args: argparse.Namespace, environ: dict[str, str]) -> Settings:
    values: dict[str, Any] = {}
    for name, (kind, _) in SERVE_OPTIONS.items():
        raw = getattr(args, name, None)
        if raw is None:
            raw = environ.get(ENV_PREFIX + name.upper())
        if raw is not None:
            values[name] = _convert(kind, raw) if isinstance(raw, str) else raw
    return Settings(**values)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("serve", help="run the orchestrator")
    defaults = Settings()
    for name, (_, help_text) in SERVE_OPTIONS.items():
        default = getattr(defaults, name)
        shown = ",".join(default) if isinstance(default, list) else default
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default=None,
                            help=f"{help_text} (default {shown}; env {ENV_PREFIX}{name.upper()})")


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get(ENV_PREFIX + "URL", "http://127.0.0.1:8090"),
                        help="orchestrator URL (env ORCHESTRATOR_URL)")
    parser.add_argument("--token", default=os.environ.get(ENV_PREFIX + "OPERATOR_TOKEN"),
                        help="operator token (env ORCHESTRATOR_OPERATOR_TOKEN)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestrator", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    check = sub.add_parser("check-config", help="validate a streams.yaml and print its errors")
    check.add_argument("file", nargs="?", type=Path, default=Path("config/streams.yaml"))
    dump = sub.add_parser("dump", help="print the orchestrator's state as JSON (operator)")
    _add_client_options(dump)
    logs = sub.add_parser("logs", help="print the orchestrator's recent log lines (operator)")
    _add_client_options(logs)
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines")
    terminate = sub.add_parser("terminate", help="stop the orchestrator (operator)")
    _add_client_options(terminate)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        settings = settings_from(args, dict(os.environ))
        from .serve import serve
        sys.exit(serve(settings))
    if args.command == "check-config":
        sys.exit(check_config(args.file))
    if args.command == "logs":
        sys.exit(print_logs(args.url, args.token, follow=args.follow))
    sys.exit(asyncio.run(_operator_call(args)))


def check_config(path: Path) -> int:
    try:
        from .streams.config import check_config as check
    except ImportError:
        print("stream worker configuration is not supported by this build", file=sys.stderr)
        return 2
    errors = check(path)
    for line in errors:
        print(line)
    if not errors:
        print(f"{path}: OK")
    return 1 if errors else 0


def print_logs(url: str, token: str | None, *, follow: bool, interval_s: float = 1.0) -> int:
    """The log tail of the operator API (/admin/api/logs), once or followed."""
    import time
    import urllib.error
    import urllib.request

    after = 0
    while True:
        request = urllib.request.Request(f"{url.rstrip('/')}/admin/api/logs?after={after}")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                lines = json.loads(response.read())["lines"]
        except urllib.error.HTTPError as exc:
            print(f"error {exc.code}: {exc.read().decode(errors='replace').strip()}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"cannot reach {url}: {exc}", file=sys.stderr)
            return 1
        for entry in lines:
            print(entry["line"], flush=True)
            after = entry["seq"]
        if not follow:
            return 0
        if not lines:
            time.sleep(interval_s)


async def _operator_call(args: argparse.Namespace) -> int:
    from .client import OrchestratorClient, OrchestratorError
    client = OrchestratorClient(args.url, operator_token=args.token)
    try:
        await client.connect()
        if args.command == "dump":
            print(json.dumps(await client.dump_data(), indent=2))
        else:
            await client.terminate_orchestrator()
            print("terminating")
    except OrchestratorError as exc:
        print(f"error {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except (OSError, ConnectionError, TimeoutError) as exc:
        print(f"cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.disconnect()
    return 0


if __name__ == "__main__":
    main()
