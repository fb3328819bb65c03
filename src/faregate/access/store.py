"""Keys, teams and users in the database (SQLAlchemy Core, async), for the admin API.

Every function takes the `Gateway` and speaks API-level fields (`user`, `team`,
`budget_usd` as a Decimal, …); rows keep integer nano-dollars and `user_id`/`team_id`. Every
write sets `updated_at` and then updates this replica's directory at once and announces the
change to the others (Redis pub/sub; without Redis they see it at their next refresh).
The secret of a key is returned once by `create_key`/`rotate_key` and never stored: the row
keeps HMAC-SHA256 of it (`key_hash`) and a hint (`sk-fg-…abcd`).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, delete, func, insert, null, select, update
from sqlalchemy.exc import IntegrityError

from faregate.access.records import KeyRecord, Limits, Subject, SubjectKind
from faregate.access.secrets import hint, new_key, new_key_id
from faregate.accounting.ledger import usd
from faregate.core.errors import GatewayError
from faregate.storage.tables import keys, requests, teams, users

if TYPE_CHECKING:
    from faregate.gateway import Gateway

MAX_NUSD = 2**63 - 1  # BIGINT
MAX_USD = Decimal(MAX_NUSD).scaleb(-9)
_MONEY = {"budget_usd": "budget_nusd", "conversation_max_cost_usd": "conversation_max_cost_nusd"}
_PLAIN = ("name", "models", "rpm", "tpm", "max_parallel", "budget_period", "conversation_max_requests", "metadata")
_KEY_ONLY = {"user": "user_id", "team": "team_id"}
_JSON = ("models", "metadata")
TABLES: dict[str, Table] = {"team": teams, "user": users}


# -- money ----------------------------------------------------------------------------------

def usd_to_nusd(value: Any, param: str) -> int:
    """Exact: a Decimal, int or decimal string with at most 9 decimals, ≥ 0; else a 400."""
    try:
        d = value if isinstance(value, Decimal) else Decimal(str(value)) if isinstance(value, int | str) else None
    except InvalidOperation:
        d = None
    if d is None or not d.is_finite():
        raise bad_request(f"'{param}' must be a decimal number of US dollars, e.g. 12.5 or \"12.50\".", param)
    if d < 0:
        raise bad_request(f"'{param}' must not be negative.", param)
    if d > MAX_USD:
        raise bad_request(f"'{param}' is too large.", param)
    nusd = d.scaleb(9)
    if nusd != nusd.to_integral_value():
        raise bad_request(f"'{param}' has more than 9 decimals (the ledger counts nano-dollars).", param)
    return int(nusd)


def nusd_to_usd(nusd: int | None) -> str | None:
    """Nano-dollars as an exact decimal string without trailing zeros (budgets)."""
    return None if nusd is None else format(usd(int(nusd)).normalize(), "f")


def cost_usd(nusd: int | Decimal | None) -> str:
    """Nano-dollars as an exact decimal string with 9 decimals (spend, costs)."""
    return f"{usd(int(nusd or 0)):.9f}"


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> GatewayError:
    return GatewayError(400, message, code=code, param=param)


def not_found(kind: str, ident: str) -> GatewayError:
    return GatewayError(404, f"No {kind} with id '{ident}'.", code=f"{kind}_not_found", param="id")


# -- fields <-> rows --------------------------------------------------------------------------

def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _plain_json(value: Any) -> Any:
    """Metadata is free JSON: Decimals (exact JSON parsing) go back to float; numbers no JSON
    writer or database takes (beyond float or 64-bit integer range) are refused."""
    if isinstance(value, Decimal):
        value = float(value)
        if not math.isfinite(value):
            raise bad_request("'metadata' holds a number out of range.", "metadata")
    elif isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        raise bad_request("'metadata' holds an integer out of range.", "metadata")
    elif isinstance(value, dict):
        return {k: _plain_json(v) for k, v in value.items()}
    elif isinstance(value, list):
        return [_plain_json(v) for v in value]
    return value


def _columns(fields: Mapping[str, Any], key: bool) -> dict[str, Any]:
    """API fields (only those given) -> column values. None clears; JSON None is SQL NULL."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if name in _MONEY:
            out[_MONEY[name]] = None if value is None else usd_to_nusd(value, name)
        elif name in _PLAIN:
            out[name] = null() if value is None and name in _JSON else _plain_json(value) if name == "metadata" else value
        elif key and name == "expires_at":
            try:
                out[name] = _utc(value)
            except OverflowError:
                raise bad_request("'expires_at' is out of range.", name) from None
        elif key and name in _KEY_ONLY:
            out[_KEY_ONLY[name]] = value
        else:
            raise bad_request(f"Unknown field '{name}'.", name, "unknown_field")
    return out


def _common(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": row["name"], "models": row["models"], "rpm": row["rpm"], "tpm": row["tpm"],
        "max_parallel": row["max_parallel"], "budget_usd": nusd_to_usd(row["budget_nusd"]),
        "budget_period": row["budget_period"], "conversation_max_requests": row["conversation_max_requests"],
        "conversation_max_cost_usd": nusd_to_usd(row["conversation_max_cost_nusd"]),
        "metadata": row["metadata"], "created_at": _utc(row["created_at"]), "updated_at": _utc(row["updated_at"]),
        "spend_usd": cost_usd(row.get("spend_nusd")),
    }


def key_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    """What the admin API shows of a key row: never the hash."""
    return {"id": row["id"], "key_hint": row["key_hint"], "user": row["user_id"], "team": row["team_id"],
            "expires_at": _utc(row["expires_at"]), "revoked": row["revoked_at"] is not None,
            "revoked_at": _utc(row["revoked_at"]), **_common(row)}


def subject_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], **_common(row)}


def _spend(column: Any) -> Any:
    """Lifetime spend of the row's id, read through the ledger's index on `column`."""
    total = func.coalesce(func.sum(requests.c.cost_nusd), 0)
    return select(total).where(column).scalar_subquery().label("spend_nusd")


def _key_query() -> Any:
    return select(keys, _spend(requests.c.key_id == keys.c.id))


def _subject_query(kind: str) -> Any:
    table = TABLES[kind]
    ledger_col = requests.c.user_id if kind == "user" else requests.c.team_id
    return select(table, _spend(ledger_col == table.c.id))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- keys -------------------------------------------------------------------------------------

def _hasher(gw: Gateway) -> Any:
    if gw.directory.hasher is None:
        raise GatewayError(403, "Virtual keys need a master key: set general_settings.master_key "
                           "(or FAREGATE_MASTER_KEY).", type="permission_error", code="admin_disabled")
    return gw.directory.hasher


async def _publish_key(gw: Gateway, row: Mapping[str, Any]) -> None:
    gw.directory.put_key(KeyRecord.from_row(row))
    await gw.directory.changed(gw.redis)


async def _key_row(conn: Any, key_id: str) -> Mapping[str, Any]:
    row = (await conn.execute(_key_query().where(keys.c.id == key_id))).mappings().first()
    if row is None:
        raise not_found("key", key_id)
    return row


async def create_key(gw: Gateway, fields: Mapping[str, Any]) -> tuple[KeyRecord, str]:
    """A new key with these fields; returns its record and the secret (shown once)."""
    hasher = _hasher(gw)
    values = _columns(fields, key=True)
    secret, now = new_key(), _now()
    values.update(id=new_key_id(), key_hash=hasher(secret), key_hint=hint(secret), created_at=now, updated_at=now)
    async with (await gw.db()).begin() as conn:
        await conn.execute(insert(keys).values(values))
        row = await _key_row(conn, values["id"])
    await _publish_key(gw, row)
    return KeyRecord.from_row(row), secret


async def get_key(gw: Gateway, key_id: str) -> Mapping[str, Any]:
    async with (await gw.db()).connect() as conn:
        return await _key_row(conn, key_id)


async def list_keys(gw: Gateway, user: str | None = None, team: str | None = None,
                    include_revoked: bool = False) -> list[Mapping[str, Any]]:
    query = _key_query().order_by(keys.c.created_at, keys.c.id)
    if user is not None:
        query = query.where(keys.c.user_id == user)
    if team is not None:
        query = query.where(keys.c.team_id == team)
    if not include_revoked:
        query = query.where(keys.c.revoked_at.is_(None))
    async with (await gw.db()).connect() as conn:
        return list((await conn.execute(query)).mappings().all())


async def _write_key(gw: Gateway, key_id: str, values: dict[str, Any],
                     unless_revoked: bool = False) -> Mapping[str, Any]:
    async with (await gw.db()).begin() as conn:
        old = await _key_row(conn, key_id)
        if unless_revoked and old["revoked_at"] is not None:
            raise GatewayError(409, f"Key '{key_id}' is revoked; create a new one.", code="key_revoked", param="id")
        if values:
            values["updated_at"] = _now()
            await conn.execute(update(keys).where(keys.c.id == key_id).values(values))
        row = await _key_row(conn, key_id)
    if values:
        await _publish_key(gw, row)
    return row


async def update_key(gw: Gateway, key_id: str, fields: Mapping[str, Any]) -> Mapping[str, Any]:
    """PATCH: only the fields given change; None clears a limit."""
    return await _write_key(gw, key_id, _columns(fields, key=True))


async def revoke_key(gw: Gateway, key_id: str) -> Mapping[str, Any]:
    """The key stops working at once on this replica (others: at once with Redis, else within
    `limits.key_refresh_seconds`). Revoking twice keeps the first time."""
    async with (await gw.db()).connect() as conn:
        old = await _key_row(conn, key_id)
    if old["revoked_at"] is not None:
        return old
    return await _write_key(gw, key_id, {"revoked_at": _now()})


async def rotate_key(gw: Gateway, key_id: str) -> tuple[KeyRecord, str]:
    """A new secret for the same key (id, limits, spend); the old secret stops working at once."""
    hasher = _hasher(gw)
    secret = new_key()
    row = await _write_key(gw, key_id, {"key_hash": hasher(secret), "key_hint": hint(secret)}, unless_revoked=True)
    return KeyRecord.from_row(row), secret


# -- teams and users --------------------------------------------------------------------------

async def _publish_subject(gw: Gateway, kind: SubjectKind, row: Mapping[str, Any]) -> None:
    gw.directory.put_subject(Subject(kind, row["id"], Limits.from_row(row)))
    await gw.directory.changed(gw.redis)


async def _subject_row(conn: Any, kind: SubjectKind, sid: str) -> Mapping[str, Any]:
    table = TABLES[kind]
    row = (await conn.execute(_subject_query(kind).where(table.c.id == sid))).mappings().first()
    if row is None:
        raise not_found(kind, sid)
    return row


async def create_subject(gw: Gateway, kind: SubjectKind, sid: str, fields: Mapping[str, Any]) -> Mapping[str, Any]:
    """A team or user with a caller-chosen id; 409 if it exists."""
    table = TABLES[kind]
    values = _columns(fields, key=False)
    now = _now()
    values.update(id=sid, created_at=now, updated_at=now)
    exists = GatewayError(409, f"A {kind} with id '{sid}' already exists; PATCH it to change it.",
                          code=f"{kind}_exists", param="id")
    try:
        async with (await gw.db()).begin() as conn:
            if (await conn.execute(select(table.c.id).where(table.c.id == sid))).first() is not None:
                raise exists
            await conn.execute(insert(table).values(values))
            row = await _subject_row(conn, kind, sid)
    except IntegrityError:  # created concurrently
        raise exists from None
    await _publish_subject(gw, kind, row)
    return row


async def get_subject(gw: Gateway, kind: SubjectKind, sid: str) -> Mapping[str, Any]:
    async with (await gw.db()).connect() as conn:
        return await _subject_row(conn, kind, sid)


async def list_subjects(gw: Gateway, kind: SubjectKind) -> list[Mapping[str, Any]]:
    async with (await gw.db()).connect() as conn:
        query = _subject_query(kind).order_by(TABLES[kind].c.id)
        return list((await conn.execute(query)).mappings().all())


async def update_subject(gw: Gateway, kind: SubjectKind, sid: str, fields: Mapping[str, Any]) -> Mapping[str, Any]:
    table = TABLES[kind]
    values = _columns(fields, key=False)
    async with (await gw.db()).begin() as conn:
        await _subject_row(conn, kind, sid)
        if values:
            values["updated_at"] = _now()
            await conn.execute(update(table).where(table.c.id == sid).values(values))
        row = await _subject_row(conn, kind, sid)
    if values:
        await _publish_subject(gw, kind, row)
    return row


async def delete_subject(gw: Gateway, kind: SubjectKind, sid: str) -> Mapping[str, Any]:
    """Hard delete; keys that named it keep the id (and its ledger history) but lose its limits."""
    table = TABLES[kind]
    async with (await gw.db()).begin() as conn:
        row = await _subject_row(conn, kind, sid)
        await conn.execute(delete(table).where(table.c.id == sid))
    gw.directory.drop_subject(kind, sid)
    await gw.directory.changed(gw.redis)
    return row
