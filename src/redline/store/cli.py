"""``redline keys``, ``redline usage`` and ``redline audit``: operate the key store and the audit store."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from redline.store import (
    DEFAULT_KEYS,
    DEFAULT_STORE,
    KEYS_ENV,
    STORE_ENV,
    StoreError,
    open_audit_store,
    open_key_store,
    sqlite_path,
)
from redline.store.base import AuditEvent, AuditStore, KeyRecord, KeyStore

EXIT_OK, EXIT_ERROR = 0, 2
_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.@:/+ ")


def _cli_error(message: str) -> Exception:
    from redline.cli import CliError

    return CliError(message)


# ---------------------------------------------------------------------------------------------------- opening


def _store_target(args: argparse.Namespace) -> str:
    return str(args.store or os.environ.get(STORE_ENV) or DEFAULT_STORE)


def _keys_target(args: argparse.Namespace) -> str:
    return str(args.keys or os.environ.get(KEYS_ENV) or DEFAULT_KEYS)


def _must_exist(target: str, what: str, hint: str) -> None:
    path = sqlite_path(target)
    if path is not None and path != ":memory:" and not Path(path).exists():
        raise _cli_error(f"no {what} at {path} ({hint})")


def _open_audit(args: argparse.Namespace, *, create: bool = False) -> AuditStore:
    target = _store_target(args)
    if not create:
        _must_exist(target, "audit store", f"pass --store or set {STORE_ENV}")
    try:
        return open_audit_store(target, allow_insecure=bool(getattr(args, "allow_insecure_store", False)))
    except StoreError as exc:
        raise _cli_error(str(exc)) from None


def _open_keys(args: argparse.Namespace, *, create: bool = False) -> KeyStore:
    target = _keys_target(args)
    if not create:
        _must_exist(target, "key store", f"pass --keys or set {KEYS_ENV}; `redline keys create` makes one")
    try:
        return open_key_store(target)
    except StoreError as exc:
        raise _cli_error(str(exc)) from None


def _when(value: str | None, flag: str) -> datetime | None:
    if value is None:
        return None
    from redline.gateway.usage import parse_when

    try:
        return parse_when(value)
    except ValueError as exc:
        raise _cli_error(f"{flag}: {exc}") from None


def _open_out(stack: ExitStack, path: str | None) -> IO[str]:
    if not path or path == "-":
        return sys.stdout
    try:
        return stack.enter_context(open(path, "w", encoding="utf-8", newline=""))
    except OSError as exc:
        raise _cli_error(f"cannot write {path}: {exc.strerror or exc}") from None


def _check_name(value: str | None, flag: str) -> str | None:
    if value is None:
        return None
    v = value.strip()
    if not v or len(v) > 128 or not set(v) <= _NAME_OK:
        raise _cli_error(f"{flag} must be 1-128 letters, digits, spaces or -_.@:/+ (got {value[:40]!r})")
    return v


# ---------------------------------------------------------------------------------------------------- keys


def _key_dict(r: KeyRecord) -> dict[str, Any]:
    return {
        "key_id": r.key_id, "team": r.team, "user": r.user, "name": r.name, "created": r.created.isoformat(),
        "revoked": r.revoked.isoformat() if r.revoked else None, "status": "revoked" if r.revoked else "active",
        "admin": r.admin, "budget_usd": r.budget_usd, "rpm": r.rpm, "models": r.models,
    }


def cmd_keys_create(args: argparse.Namespace) -> int:
    team = _check_name(args.team, "--team")
    assert team is not None
    user = _check_name(args.user, "--user")
    name = _check_name(args.name, "--name")
    if args.budget is not None and not args.budget >= 0:
        raise _cli_error("--budget must be a number of USD >= 0")
    if args.rpm is not None and args.rpm < 1:
        raise _cli_error("--rpm must be at least 1")
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models is not None else None
    if models is not None and not models:
        raise _cli_error("--models needs at least one model name")
    ks = _open_keys(args, create=True)
    try:
        rec, secret = ks.create(team, user=user, name=name, admin=args.admin, budget_usd=args.budget,
                                rpm=args.rpm, models=models)
    except ValueError as exc:
        raise _cli_error(str(exc)) from None
    finally:
        ks.close()
    if args.format == "json":
        print(json.dumps({**_key_dict(rec), "secret": secret}, indent=2))
        return EXIT_OK
    if args.quiet:
        print(secret)
        return EXIT_OK
    extras = []
    if rec.user:
        extras.append(f"user {rec.user}")
    if rec.admin:
        extras.append("ADMIN")
    if rec.budget_usd is not None:
        extras.append(f"budget {rec.budget_usd:g} USD/month")
    if rec.rpm is not None:
        extras.append(f"{rec.rpm} rpm")
    if rec.models is not None:
        extras.append("models " + ",".join(rec.models))
    print(f"key id:  {rec.key_id}  (team {rec.team}{', ' + ', '.join(extras) if extras else ''})")
    print(f"secret:  {secret}")
    print("The secret is shown only now and cannot be recovered; store it safely. Clients send it as "
          "`Authorization: Bearer <secret>`.", file=sys.stderr)
    return EXIT_OK


def cmd_keys_list(args: argparse.Namespace) -> int:
    ks = _open_keys(args)
    try:
        records = ks.list()
    finally:
        ks.close()
    if args.team:
        records = [r for r in records if r.team == args.team]
    if not args.all:
        records = [r for r in records if r.revoked is None]
    spend: dict[str, float] = {}
    if args.format == "table":
        spend = _month_spend_by_key(args)
    if args.format == "json":
        print(json.dumps([_key_dict(r) for r in records], indent=2))
        return EXIT_OK
    if args.format == "csv":
        w = csv.DictWriter(sys.stdout, fieldnames=list(_key_dict(records[0]) if records else _KEY_FIELDS),
                           lineterminator="\n")
        w.writeheader()
        for r in records:
            d = _key_dict(r)
            d["models"] = ",".join(r.models) if r.models is not None else ""
            w.writerow(d)
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    table = Table(header_style="bold")
    for col in ("key id", "team", "user", "name", "created", "status", "admin", "budget USD", "spent (month)",
                "rpm", "models"):
        table.add_column(col, justify="right" if col in ("budget USD", "spent (month)", "rpm") else "left",
                         no_wrap=col in ("key id", "created", "status"))
    for r in records:
        table.add_row(r.key_id, r.team, r.user or "", r.name or "", f"{r.created:%Y-%m-%d}",
                      f"revoked {r.revoked:%Y-%m-%d}" if r.revoked else "active", "yes" if r.admin else "",
                      "" if r.budget_usd is None else f"{r.budget_usd:g}",
                      f"{spend[r.key_id]:.2f}" if r.key_id in spend else "",
                      "" if r.rpm is None else str(r.rpm), "all" if r.models is None else ",".join(r.models))
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    print(f"{len(records)} key(s)" + ("" if args.all else " (active; --all shows revoked keys too)"))
    return EXIT_OK


_KEY_FIELDS = ["key_id", "team", "user", "name", "created", "revoked", "status", "admin", "budget_usd", "rpm",
               "models"]


def _month_spend_by_key(args: argparse.Namespace) -> dict[str, float]:
    """Month-to-date spend per key when the audit store is at hand; {} otherwise (never an error)."""
    target = _store_target(args)
    path = sqlite_path(target)
    if path is None or not Path(path).exists():
        return {}
    from redline.gateway.limits import month_start

    try:
        store = open_audit_store(target)
    except StoreError:
        return {}
    try:
        return {r.group: r.cost_usd for r in store.usage(month_start(), "key")}
    finally:
        store.close()


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    ks = _open_keys(args)
    try:
        for key_id in args.key_ids:
            rec = ks.get(key_id)
            if rec is None:
                raise _cli_error(f"no key {key_id!r} (see `redline keys list --all`)")
            if rec.revoked is not None:
                print(f"{key_id} was already revoked on {rec.revoked:%Y-%m-%d %H:%M} UTC")
                continue
            ks.revoke(key_id)
            print(f"revoked {key_id} (team {rec.team}); requests with it now get 401")
    finally:
        ks.close()
    return EXIT_OK


def cmd_keys_show(args: argparse.Namespace) -> int:
    ks = _open_keys(args)
    try:
        rec = ks.get(args.key_id)
    finally:
        ks.close()
    if rec is None:
        raise _cli_error(f"no key {args.key_id!r} (see `redline keys list --all`)")
    print(json.dumps(_key_dict(rec), indent=2))
    return EXIT_OK


# ---------------------------------------------------------------------------------------------------- usage


def cmd_usage(args: argparse.Namespace) -> int:
    from redline.gateway.usage import render_table, usage_report, write_csv, write_json

    since = _when(args.since, "--since")
    until = _when(args.until, "--until")
    assert since is not None
    if until is not None and until <= since:
        raise _cli_error("--until must be after --since")
    store = _open_audit(args)
    try:
        report = usage_report(store, args.by, since, until)
    finally:
        store.close()
    with ExitStack() as stack:
        out = _open_out(stack, args.output)
        if args.format == "json":
            write_json(report, out)
        elif args.format == "csv":
            write_csv(report, out)
        else:
            render_table(report, out)
    return EXIT_OK


# ---------------------------------------------------------------------------------------------------- audit

EXPORT_FIELDS = ["ts", "request_id", "key_id", "team", "user", "provider", "model", "endpoint", "action", "status",
                 "stream", "finding_counts", "finding_kinds", "fingerprints", "latency_ms", "upstream_ms",
                 "prompt_tokens", "completion_tokens", "cost_usd", "rerouted_from", "error", "redacted_prompt"]


def cmd_audit_export(args: argparse.Namespace) -> int:
    since = _when(args.since, "--since") or datetime(1970, 1, 1, tzinfo=UTC)
    until = _when(args.until, "--until")
    if args.limit is not None and args.limit < 1:
        raise _cli_error("--limit must be at least 1")
    store = _open_audit(args)
    n = 0
    try:
        events = store.events(since, until, limit=args.limit, team=args.team, action=args.action)
        with ExitStack() as stack:
            out = _open_out(stack, args.output)
            if args.format == "csv":
                w = csv.DictWriter(out, fieldnames=EXPORT_FIELDS, lineterminator="\n")
                w.writeheader()
            for e in events:
                d = e.to_dict()
                if args.no_prompts:
                    d["redacted_prompt"] = None
                if args.format == "csv":
                    for k in ("finding_counts", "finding_kinds", "fingerprints"):
                        d[k] = json.dumps(d[k], sort_keys=True, separators=(",", ":"))
                    w.writerow(d)
                else:
                    out.write(json.dumps(d, ensure_ascii=False, separators=(",", ":")) + "\n")
                n += 1
    finally:
        store.close()
    print(f"{n} event(s) exported", file=sys.stderr)
    return EXIT_OK


def cmd_audit_purge(args: argparse.Namespace) -> int:
    before = _when(args.before, "--before")
    assert before is not None
    if before > datetime.now(UTC):
        raise _cli_error("--before is in the future: that would delete events still being written")
    store = _open_audit(args)
    try:
        count = getattr(store, "count", None)
        n_before = int(count(None, before)) if callable(count) else None
        what = f"{n_before} audit event(s)" if n_before is not None else "all audit events"
        if args.dry_run:
            print(f"would delete {what} before {before:%Y-%m-%d %H:%M:%S} UTC")
            return EXIT_OK
        if not args.yes:
            if not sys.stdin.isatty():
                raise _cli_error(f"refusing to delete {what} before {before:%Y-%m-%d %H:%M} UTC without --yes")
            answer = input(f"delete {what} before {before:%Y-%m-%d %H:%M:%S} UTC? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing deleted")
                return EXIT_OK
        deleted = store.purge(before)
        print(f"deleted {deleted} audit event(s) before {before:%Y-%m-%d %H:%M:%S} UTC")
        vacuum = getattr(store, "vacuum", None)
        if args.vacuum and callable(vacuum):
            vacuum()
            print("file compacted")
    finally:
        store.close()
    return EXIT_OK


def _read_jsonl(path: str) -> Iterator[AuditEvent]:
    try:
        fh = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise _cli_error(f"cannot read {path}: {exc.strerror or exc}") from None
    with fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield AuditEvent.from_dict(json.loads(line))
            except (ValueError, TypeError, KeyError) as exc:
                raise _cli_error(f"{path}:{n}: not an audit event: {exc}") from None


def cmd_audit_import(args: argparse.Namespace) -> int:
    store = _open_audit(args, create=True)
    total = 0
    try:
        for path in args.files:
            batch: list[AuditEvent] = []
            for e in _read_jsonl(path):
                batch.append(e)
                if len(batch) >= 1000:
                    store.write(batch)
                    total += len(batch)
                    batch = []
            store.write(batch)
            total += len(batch)
    finally:
        store.close()
    print(f"{total} event(s) imported")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------------- parser


def _store_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", metavar="PATH_OR_URL",
                   help=f"audit store: file path, sqlite:///PATH or clickhouse://… (default ${STORE_ENV} or "
                        f"{DEFAULT_STORE})")
    p.add_argument("--allow-insecure-store", action="store_true",
                   help="use a ClickHouse store even as the passwordless 'default' user or unencrypted to a host "
                        "other than loopback (refused by default)")


def _keys_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keys", metavar="PATH", help=f"key store file (default ${KEYS_ENV} or {DEFAULT_KEYS})")


def _float(value: str) -> float:
    try:
        f = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if f != f or f in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"not a finite number: {value!r}")
    return f


def register(subparsers: Any) -> None:
    keys = subparsers.add_parser("keys", help="virtual API keys for the gateway: create, list, revoke")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    c = ksub.add_parser("create", help="create a key (the secret is printed once)")
    c.add_argument("--team", required=True, help="team the key belongs to (usage and budgets roll up by team)")
    c.add_argument("--user", help="person or service using the key")
    c.add_argument("--name", help="a label, e.g. 'ci-bot' or 'laptop'")
    c.add_argument("--admin", action="store_true", help="may call the gateway's admin endpoints")
    c.add_argument("--budget", type=_float, metavar="USD", help="monthly budget in USD (calendar month, UTC)")
    c.add_argument("--rpm", type=int, metavar="N", help="requests per minute")
    c.add_argument("--models", metavar="A,B", help="allowed models, comma-separated (gpt-4o*, claude-sonnet-4)")
    c.add_argument("--format", choices=("text", "json"), default="text")
    c.add_argument("-q", "--quiet", action="store_true", help="print only the secret (for scripts)")
    _keys_opts(c)
    c.set_defaults(func=cmd_keys_create)

    ls = ksub.add_parser("list", help="list keys (never their secrets)")
    ls.add_argument("--team", help="only this team")
    ls.add_argument("--all", action="store_true", help="include revoked keys")
    ls.add_argument("--format", choices=("table", "json", "csv"), default="table")
    _keys_opts(ls)
    _store_opts(ls)
    ls.set_defaults(func=cmd_keys_list)

    rv = ksub.add_parser("revoke", help="revoke keys: requests with them get 401 from then on")
    rv.add_argument("key_ids", nargs="+", metavar="KEY_ID")
    _keys_opts(rv)
    rv.set_defaults(func=cmd_keys_revoke)

    sh = ksub.add_parser("show", help="one key's settings as JSON")
    sh.add_argument("key_id", metavar="KEY_ID")
    _keys_opts(sh)
    sh.set_defaults(func=cmd_keys_show)

    u = subparsers.add_parser("usage", help="spend and efficiency table by team, model, provider or key")
    u.add_argument("--by", choices=("team", "model", "provider", "key"), default="team")
    u.add_argument("--since", default="7d", help="7d, 24h, today, month, 2025-01-01 or ISO time (default 7d)")
    u.add_argument("--until", help="end of the period (exclusive), same forms as --since")
    u.add_argument("-f", "--format", choices=("table", "json", "csv"), default="table")
    u.add_argument("-o", "--output", metavar="FILE")
    _store_opts(u)
    u.set_defaults(func=cmd_usage)

    a = subparsers.add_parser("audit", help="export, purge or import gateway audit events")
    asub = a.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    ex = asub.add_parser("export", help="write audit events as JSON lines or CSV")
    ex.add_argument("--since", help="start (default: the beginning); 7d, 24h, 2025-01-01, ISO time")
    ex.add_argument("--until", help="end (exclusive)")
    ex.add_argument("-f", "--format", choices=("jsonl", "csv"), default="jsonl")
    ex.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    ex.add_argument("--team", help="only this team")
    ex.add_argument("--action", choices=("allow", "redact", "pseudonymize", "block", "reroute", "error", "denied"))
    ex.add_argument("--limit", type=int, metavar="N")
    ex.add_argument("--no-prompts", action="store_true", help="leave out the stored redacted prompts")
    _store_opts(ex)
    ex.set_defaults(func=cmd_audit_export)

    pu = asub.add_parser("purge", help="delete audit events older than a date (retention)")
    pu.add_argument("--before", required=True, help="2025-01-01, or an age such as 90d")
    pu.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    pu.add_argument("--dry-run", action="store_true", help="only say how many events would go")
    pu.add_argument("--vacuum", action="store_true", help="compact the SQLite file afterwards")
    _store_opts(pu)
    pu.set_defaults(func=cmd_audit_purge)

    im = asub.add_parser("import", help="load JSON-lines audit events (an export or a writer spill file)")
    im.add_argument("files", nargs="+", metavar="FILE")
    _store_opts(im)
    im.set_defaults(func=cmd_audit_import)
