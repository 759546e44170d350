"""``redline gateway --config redline.yaml``: run the gateway (uvicorn, loopback by default)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from typing import Any

from redline.gateway.config import ConfigError, load_config

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("gateway", help="run the OpenAI-compatible gateway that guards prompts and answers")
    p.add_argument("--config", "-c", required=True, metavar="FILE", help="gateway configuration (YAML)")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--check", action="store_true", help="validate the configuration and exit")
    p.add_argument("--allow-insecure-store", action="store_true",
                   help="use a ClickHouse audit store even as the passwordless 'default' user or unencrypted to a "
                        "host other than loopback (refused by default)")
    p.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=cmd_gateway)


def cmd_gateway(args: argparse.Namespace) -> int:
    from redline.cli import CliError

    if args.workers < 1:
        raise CliError("--workers must be at least 1")
    from redline.store import INSECURE_ENV, StoreError, check_audit_store

    try:
        config = load_config(args.config)
        allow_insecure = args.allow_insecure_store or config.store.allow_insecure
        try:
            check_audit_store(config.store.audit, allow_insecure=allow_insecure)
        except StoreError as exc:
            raise CliError(str(exc)) from None
        if allow_insecure:
            os.environ[INSECURE_ENV] = "1"  # for the uvicorn worker processes
        if args.check:
            from redline.engine import Scanner

            det = config.detection
            scanner = Scanner(extra_rule_paths=det.rules, disabled=det.disable, enabled=det.enable,
                              backend=det.backend)
            config.check_types(r.id for r in scanner.all_rules)
            print(f"{args.config}: OK ({len(config.providers)} provider(s), {len(config.models)} model(s))")
            return 0
    except (ConfigError, ValueError) as exc:
        raise CliError(str(exc)) from None

    import uvicorn

    os.environ["REDLINE_GATEWAY_CONFIG"] = os.path.abspath(args.config)
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="redline-metrics-")
    kwargs: dict[str, Any] = {"host": args.host, "port": args.port, "workers": args.workers,
                              "log_level": args.log_level, "access_log": False, "factory": True,
                              "timeout_graceful_shutdown": 30}
    for mod, opt, value in (("uvloop", "loop", "uvloop"), ("httptools", "http", "httptools")):
        try:
            __import__(mod)
            kwargs[opt] = value
        except ImportError:
            pass
    print(f"redline gateway listening on http://{args.host}:{args.port}/v1 ({args.workers} worker(s))",
          file=sys.stderr)
    # uvicorn shuts down gracefully on SIGTERM (the app flushes its audit writer), then re-raises the signal
    # to the handler that was there before it: make that a clean exit rather than death by signal.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run("redline.gateway.app:app_from_env", **kwargs)
    return 0


def _exit_cleanly(_signum: int, _frame: object) -> None:
    raise SystemExit(0)
