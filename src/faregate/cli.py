"""The `faregate` command: serve, mock-upstream, chat, config check."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import math
import os
import sys
from pathlib import Path

log = logging.getLogger("faregate")

DEFAULT_CONFIG_FILE = "faregate.yaml"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def cmd_serve(args: argparse.Namespace) -> int:
    from faregate.config import ConfigError
    from faregate.config.sources import CONFIG_ENV, EMBEDDED, load
    from faregate.routing.checks import check_deployments

    source = args.config
    if source is None and Path(DEFAULT_CONFIG_FILE).is_file():
        source = DEFAULT_CONFIG_FILE
    try:
        config = load(source)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return 2
    problems = check_deployments(config)
    if problems:
        print(ConfigError(problems, source or "embedded default").render(), file=sys.stderr)
        return 2
    server = config.server
    host = args.host or server.host
    port = args.port if args.port is not None else server.port
    workers = args.workers or server.workers
    _setup_logging(server.log_level)
    has_key = config.general_settings.master_key is not None
    if not has_key and not _is_loopback(host) and not args.insecure:
        print(f"Refusing to listen on {host} with no master key: anyone who can reach it could use your "
              "upstream credentials. Set general_settings.master_key (or FAREGATE_MASTER_KEY), or pass "
              "--insecure if the network is trusted.", file=sys.stderr)
        return 2
    from faregate.storage.urls import database_url, sqlite_at_head

    if not sqlite_at_head(database_url(config)) and run_migrations(source) != 0:
        return 2
    groups = sorted({m.model_name for m in config.model_list})
    log.info("faregate %s: %s, %d model group(s): %s", "config " + source if source else "embedded default",
             f"{workers} worker(s)", len(groups), ", ".join(groups))
    if not has_key:
        log.warning("no master key set: the gateway is OPEN to anyone who can reach %s:%d", host, port)
    os.environ[CONFIG_ENV] = os.path.abspath(source) if source else EMBEDDED
    drain = _shutdown_timeout(server)
    os.environ[SHUTDOWN_TIMEOUT_ENV] = f"{drain:g}"  # the workers' drain deadline (http/app.py)
    if workers > 1:
        _multiprocess_metrics(server.data_dir.expanduser() / f"metrics-{port}")

    # Hand the process over to granian's own command line: the supervisor that stays behind
    # holds no pydantic, config or faregate modules (~20 MB instead of ~40 MB); each worker
    # builds the app from FAREGATE_CONFIG.
    argv = [sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "--host", host,
            "--port", str(port), "--workers", str(workers), "--loop", "uvloop" if _has_uvloop() else "asyncio",
            "--no-access-log", "--log-level", server.log_level, "--ws", "--backlog", "2048",
            # SIGTERM: granian stops accepting and waits for open requests; each worker ends
            # what is left at the deadline, then flushes its sinks. Killed only if that hangs.
            "--workers-kill-timeout", str(min(1800, math.ceil(drain) + KILL_MARGIN)),
            "faregate.http.app:app_from_env"]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)
    return 0


def _multiprocess_metrics(default_dir: Path) -> None:
    """Several workers share one /metrics through prometheus-client's multiprocess mode: each
    writes its samples to files in one directory, emptied here before they start (a reused
    directory would carry a previous run's counters)."""
    path = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or default_dir)
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.db"):
        old.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)


SHUTDOWN_TIMEOUT_ENV = "FAREGATE_SHUTDOWN_TIMEOUT"  # read by the workers: faregate.http.app
DEFAULT_SHUTDOWN_TIMEOUT = 30.0
KILL_MARGIN = 15  # seconds past the drain deadline for the workers to flush their sinks


def _shutdown_timeout(server: object) -> float:
    """How long SIGTERM waits for in-flight calls: FAREGATE_SHUTDOWN_TIMEOUT if set, else
    `server.shutdown_timeout` (once the config has it), else 30 s."""
    value = os.environ.get(SHUTDOWN_TIMEOUT_ENV)
    try:
        seconds = float(value) if value else float(getattr(server, "shutdown_timeout", DEFAULT_SHUTDOWN_TIMEOUT))
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds < float("inf"):
        print(f"{SHUTDOWN_TIMEOUT_ENV}={value!r} is not a number of seconds; using {DEFAULT_SHUTDOWN_TIMEOUT:g}", file=sys.stderr)
        seconds = DEFAULT_SHUTDOWN_TIMEOUT
    return seconds


def run_migrations(source: str | None) -> int:
    """`faregate db upgrade` in a child process: once, before any worker starts, and without
    loading SQLAlchemy and Alembic into the long-lived supervisor."""
    import subprocess

    args = [sys.executable, "-m", "faregate", "db", "upgrade", "--quiet"] + (["--config", source] if source else [])
    return subprocess.run(args).returncode


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    import asyncio

    from faregate.config import ConfigError
    from faregate.config.sources import load
    from faregate.storage.db import create_engine, current_revision, upgrade
    from faregate.storage.urls import database_url

    try:
        config = load(args.config)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return 2
    url = database_url(config)

    async def run() -> str | None:
        engine = create_engine(url)
        try:
            await upgrade(engine)
            return await current_revision(engine)
        finally:
            await engine.dispose()

    try:
        revision = asyncio.run(run())
    except Exception as exc:
        print(f"database migration failed ({type(exc).__name__}): {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"database at revision {revision}")
    return 0


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def cmd_config_check(args: argparse.Namespace) -> int:
    from faregate.config import ConfigError, load_config
    from faregate.routing.checks import check_deployments

    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(exc.render())
        return 1
    problems = check_deployments(config)
    if problems:
        print(ConfigError(problems, args.file).render())
        return 1
    groups = sorted({m.model_name for m in config.model_list})
    print(f"{args.file}: OK — {len(config.model_list)} deployment(s) in {len(groups)} model group(s): {', '.join(groups)}")
    for key in config.ignored_keys():
        print(f"  note: {key} is read but not used by faregate (yet)")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from faregate.client import chat

    return chat(args.prompt, model=args.model, stream=args.stream, base_url=args.base_url,
                api_key=args.api_key or os.environ.get("FAREGATE_API_KEY"), max_tokens=args.max_tokens)


def cmd_mock(args: argparse.Namespace) -> int:
    from faregate.mock.cli import main_from_args

    return main_from_args(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faregate", description="A self-hosted LLM gateway.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help=f"config file (default: ./{DEFAULT_CONFIG_FILE} if present, else the embedded default)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 4000)")
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve.add_argument("--insecure", action="store_true", help="allow a non-loopback address without a master key")
    serve.set_defaults(func=cmd_serve)

    mock = sub.add_parser("mock-upstream", help="run the mock OpenAI/Anthropic upstream")
    from faregate.mock.cli import add_arguments

    add_arguments(mock)
    mock.set_defaults(func=cmd_mock)

    chat = sub.add_parser("chat", help="send one chat message to a running gateway")
    chat.add_argument("prompt")
    chat.add_argument("--model", help="model group (default: the first one the gateway lists)")
    chat.add_argument("--stream", action="store_true")
    chat.add_argument("--max-tokens", type=int, default=256)
    chat.add_argument("--base-url", default=os.environ.get("FAREGATE_URL", "http://127.0.0.1:4000"))
    chat.add_argument("--api-key", help="virtual or master key (default: $FAREGATE_API_KEY)")
    chat.set_defaults(func=cmd_chat)

    from faregate.admin_cli import add_commands  # keys, teams, users, spend (standard library only)

    add_commands(sub)

    db = sub.add_parser("db", help="database tools")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    up = db_sub.add_parser("upgrade", help="apply database migrations (serve does this at start-up)")
    up.add_argument("--config", help="config file (default: the embedded default)")
    up.add_argument("--quiet", action="store_true")
    up.set_defaults(func=cmd_db_upgrade)

    config = sub.add_parser("config", help="config tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate a config file")
    check.add_argument("file")
    check.set_defaults(func=cmd_config_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)
