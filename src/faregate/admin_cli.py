"""`faregate keys|teams|users|spend`: the admin API (/admin) from a shell.

Talks HTTP to a running gateway (`--url`, default $FAREGATE_URL or http://127.0.0.1:4000)
with the master key (`--master-key`, default $FAREGATE_MASTER_KEY). Standard library only, so
the command starts fast. Flags mirror the API's JSON fields; in `update`, the value `none`
clears a field. Output: an aligned table by default, `--format csv|json` for scripts.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_URL = "http://127.0.0.1:4000"
NULL = object()  # "none" on the command line: JSON null (clears a field in an update)

KEY_COLUMNS = ("id", "name", "key_hint", "user", "team", "models", "budget_usd", "budget_period",
               "spend_usd", "expires_at", "revoked")
SUBJECT_COLUMNS = ("id", "name", "models", "rpm", "tpm", "max_parallel", "budget_usd", "budget_period", "spend_usd")
SPEND_COLUMNS = ("group", "requests", "input_tokens", "output_tokens", "cost_usd", "cache_hits", "saved_usd")
NUMERIC = {"requests", "input_tokens", "output_tokens", "cost_usd", "cache_hits", "saved_usd", "spend_usd", "budget_usd", "rpm", "tpm",
           "max_parallel"}


class ApiError(Exception):
    pass


# -- flags --------------------------------------------------------------------------------------

def _nullable(convert: Any) -> Any:
    def parse(text: str) -> Any:
        return NULL if text.strip().lower() in ("none", "null") else convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def _models(text: str) -> list[str]:
    return [m.strip() for m in text.split(",") if m.strip()]


def _metadata(text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


_FIELDS: list[tuple[str, Any, str]] = [
    ("name", str, "a label"),
    ("models", _models, "model groups it may call, comma-separated (none: all)"),
    ("rpm", int, "requests per minute"),
    ("tpm", int, "tokens per minute"),
    ("max-parallel", int, "requests in flight at once"),
    ("budget-usd", str, "budget in USD, exact up to 9 decimals"),
    ("budget-period", str, "day | week | month (none: lifetime)"),
    ("conversation-max-requests", int, "requests per conversation id"),
    ("conversation-max-cost-usd", str, "spend per conversation id, USD"),
    ("metadata", _metadata, "a JSON object"),
]
_KEY_FIELDS: list[tuple[str, Any, str]] = [
    ("user", str, "user id it belongs to"),
    ("team", str, "team id it belongs to"),
    ("expires-at", str, "ISO 8601 datetime (UTC unless it says otherwise)"),
]


def _add_fields(parser: argparse.ArgumentParser, key: bool) -> None:
    group = parser.add_argument_group("fields (in update, 'none' clears one)")
    for flag, convert, text in (_KEY_FIELDS if key else []) + _FIELDS:
        group.add_argument(f"--{flag}", type=_nullable(convert), default=argparse.SUPPRESS, help=text)


def _body(args: argparse.Namespace) -> dict[str, Any]:
    names = [f.replace("-", "_") for f, _, _ in _KEY_FIELDS + _FIELDS]
    return {n: (None if getattr(args, n) is NULL else getattr(args, n)) for n in names if hasattr(args, n)}


# -- HTTP ---------------------------------------------------------------------------------------

def _call(args: argparse.Namespace, method: str, path: str, body: Any = None,
          query: dict[str, Any] | None = None) -> Any:
    url = args.url.rstrip("/") + path
    params = {k: v for k, v in (query or {}).items() if v not in (None, False)}
    if params:
        url += "?" + urllib.parse.urlencode({k: ("true" if v is True else v) for k, v in params.items()})
    headers = {"accept": "application/json"}
    if args.master_key:
        headers["authorization"] = f"Bearer {args.master_key}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["content-type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=args.timeout) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            err = json.loads(raw)["error"]
            message = err["message"] + (f" (param: {err['param']})" if err.get("param") else "")
        except (ValueError, KeyError, TypeError):
            message = raw.decode(errors="replace")[:500] or exc.reason
        raise ApiError(f"error {exc.code}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ApiError(f"error: cannot reach the gateway at {args.url}: {reason}") from None


# -- output -------------------------------------------------------------------------------------

def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return _cell(value)


def _table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]

    def line(values: list[str]) -> str:
        out = [v.rjust(w) if c in NUMERIC else v.ljust(w) for v, w, c in zip(values, widths, columns, strict=True)]
        return "  ".join(out).rstrip()

    return "\n".join([line(list(columns)), *(line(r) for r in cells)])


def _print_rows(args: argparse.Namespace, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    if args.format == "json":
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    elif args.format == "csv":
        every = list(dict.fromkeys(k for r in rows for k in r)) or list(columns)
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(every)
        for r in rows:
            writer.writerow([_csv_cell(r.get(c)) for c in every])
    elif rows:
        print(_table(rows, columns))
    else:
        print("(none)")


def _print_record(args: argparse.Namespace, record: dict[str, Any]) -> None:
    if args.format == "json":
        print(json.dumps(record, indent=2, ensure_ascii=False))
    elif args.format == "csv":
        _print_rows(args, [record], tuple(record))
    else:
        width = max(len(k) for k in record)
        for k, v in record.items():
            print(f"{k.ljust(width)}  {_cell(v)}")


def _print_secret(args: argparse.Namespace, record: dict[str, Any], verb: str) -> None:
    if args.format != "table":
        _print_record(args, record)
        return
    label = f" ({record['name']})" if record.get("name") else ""
    print(f"{verb} key {record['id']}{label}:\n\n    {record['key']}\n")
    print("Copy it now: it will not be shown again (the gateway keeps only a hash).", file=sys.stderr)


# -- commands -----------------------------------------------------------------------------------

def _keys(args: argparse.Namespace) -> None:
    op = args.op
    if op == "create":
        _print_secret(args, _call(args, "POST", "/admin/keys", _body(args)), "Created")
    elif op == "list":
        query = {"user": args.user, "team": args.team, "include_revoked": args.include_revoked}
        _print_rows(args, _call(args, "GET", "/admin/keys", query=query)["data"], KEY_COLUMNS)
    elif op == "rotate":
        _print_secret(args, _call(args, "POST", f"/admin/keys/{_q(args.id)}/rotate"), "Rotated")
    else:
        method, body = {"show": ("GET", None), "update": ("PATCH", "body"), "revoke": ("DELETE", None)}[op]
        _print_record(args, _call(args, method, f"/admin/keys/{_q(args.id)}", _body(args) if body else None))


def _subjects(args: argparse.Namespace) -> None:
    base, op = f"/admin/{args.command}", args.op
    if op == "list":
        _print_rows(args, _call(args, "GET", base)["data"], SUBJECT_COLUMNS)
    elif op == "create":
        _print_record(args, _call(args, "POST", base, {"id": args.id, **_body(args)}))
    else:
        method = {"show": "GET", "update": "PATCH", "delete": "DELETE"}[op]
        _print_record(args, _call(args, method, f"{base}/{_q(args.id)}", _body(args) if op == "update" else None))


def _spend(args: argparse.Namespace) -> None:
    query = {"group_by": args.group_by, "start": args.start, "end": args.end}
    _print_rows(args, _call(args, "GET", "/admin/spend", query=query)["rows"], SPEND_COLUMNS)


def _q(ident: str) -> str:
    return urllib.parse.quote(ident, safe="")


def run(args: argparse.Namespace) -> int:
    try:
        {"keys": _keys, "teams": _subjects, "users": _subjects, "spend": _spend}[args.command](args)
    except ApiError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except BrokenPipeError:  # `| head`: the reader left; not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=os.environ.get("FAREGATE_URL", DEFAULT_URL),
                        help=f"the gateway (default: $FAREGATE_URL or {DEFAULT_URL})")
    common.add_argument("--master-key", default=os.environ.get("FAREGATE_MASTER_KEY"),
                        help="the master key (default: $FAREGATE_MASTER_KEY)")
    common.add_argument("--format", choices=("table", "csv", "json"), default="table")
    common.add_argument("--timeout", type=float, default=30.0, help=argparse.SUPPRESS)
    return common


def add_commands(sub: Any) -> None:
    """Add `keys`, `teams`, `users` and `spend` to the `faregate` command's subparsers."""
    common = _common()
    keys = sub.add_parser("keys", help="virtual keys on a running gateway (master key)")
    ops = keys.add_subparsers(dest="op", required=True)
    _add_fields(ops.add_parser("create", parents=[common], help="create a key; prints its secret once"), key=True)
    lst = ops.add_parser("list", parents=[common], help="list keys")
    lst.add_argument("--user")
    lst.add_argument("--team")
    lst.add_argument("--include-revoked", action="store_true")
    for op, text in (("show", "one key"), ("update", "change a key"), ("revoke", "revoke a key (at once)"),
                     ("rotate", "new secret, same id and limits; prints it once")):
        p = ops.add_parser(op, parents=[common], help=text)
        p.add_argument("id")
        if op == "update":
            _add_fields(p, key=True)
    keys.set_defaults(func=run)

    for plural, kind in (("teams", "team"), ("users", "user")):
        parser = sub.add_parser(plural, help=f"{plural} on a running gateway (master key)")
        ops = parser.add_subparsers(dest="op", required=True)
        ops.add_parser("list", parents=[common], help=f"list {plural}")
        for op in ("create", "show", "update", "delete"):
            p = ops.add_parser(op, parents=[common], help=f"{op} a {kind}")
            p.add_argument("id")
            if op in ("create", "update"):
                _add_fields(p, key=False)
        parser.set_defaults(func=run)

    spend = sub.add_parser("spend", parents=[common], help="spend report from a running gateway's ledger")
    spend.add_argument("--group-by", default="key",
                       choices=("key", "user", "team", "end_user", "feature", "model", "deployment", "day"))
    spend.add_argument("--start", help="ISO date or datetime, UTC (default: all time)")
    spend.add_argument("--end", help="ISO date (inclusive) or datetime (exclusive)")
    spend.set_defaults(func=run)
