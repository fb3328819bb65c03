"""Admin API under /admin: virtual keys, teams, users, spend reports and ledger rows.

Master key only: a virtual key gets 403 `admin_only`, no key 401, and a gateway without a
master key answers 403 on every admin route. Bodies are read here (not by FastAPI) so money
stays exact (JSON numbers parse as Decimal), unknown fields are a 400 naming the field, and
the size limit holds; the models below are what /docs shows. SQL lives in `access/store.py`
and `accounting/spend.py`. Nothing here logs a request body or a secret.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from faregate.access import store
from faregate.access.records import SubjectKind
from faregate.access.secrets import hint
from faregate.accounting import spend as ledger
from faregate.core.errors import GatewayError, unauthorized
from faregate.http.responses import JSONResponse
from faregate.stages.authenticate import presented_key

M = TypeVar("M", bound=BaseModel)

# -- auth -----------------------------------------------------------------------------------


async def require_master(request: Request) -> None:
    gw = request.app.state.gateway
    master = gw.config.general_settings.master_key
    if master is None:
        raise GatewayError(403, "The admin API is disabled: this gateway has no master key. Set "
                           "general_settings.master_key (or FAREGATE_MASTER_KEY) and restart.",
                           type="permission_error", code="admin_disabled")
    presented = presented_key(request.headers)
    if presented is None:
        raise unauthorized()
    if hmac.compare_digest(presented.encode(), master.get_secret_value().encode()):
        return
    if not gw.directory.loaded:  # only in the first moments after start-up
        await gw.directory.wait_loaded()
    if gw.directory.lookup(presented) is not None:
        raise GatewayError(403, "The admin API needs the master key; this is a virtual key.",
                           type="permission_error", code="admin_only")
    raise unauthorized()


def _invalid(errors: list[Any]) -> GatewayError:
    err = errors[0]
    loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
    param = ".".join(loc) or None
    if err.get("type") == "extra_forbidden":
        return store.bad_request(f"Unknown field '{param}'.", param, "unknown_field")
    if err.get("type") == "missing":
        return store.bad_request(f"'{param}' is required.", param, "missing_field")
    return store.bad_request(f"Invalid '{param}': {err.get('msg', 'invalid value')}.", param)


class AdminRoute(APIRoute):
    """Checks the master key before anything else; FastAPI's 422s become 400s naming the field."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            await require_master(request)
            for params in (request.path_params, request.query_params):
                for name, value in params.items():
                    if "\x00" in value:  # PostgreSQL refuses NUL in text: a 400, not a 500
                        raise store.bad_request(f"'{name}' must not contain NUL characters.", name)
            try:
                return await handler(request)
            except RequestValidationError as exc:
                raise _invalid(list(exc.errors())) from None

        return run


# -- request and response models ------------------------------------------------------------

Money = Annotated[Decimal | None, Field(ge=0, le=store.MAX_USD, decimal_places=9,
                                        allow_inf_nan=False, description="US dollars, up to 9 decimals: a JSON number or a string.")]
Count = Annotated[int | None, Field(strict=True, ge=1, le=2**31 - 1)]
Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[\w.@+:-]+$")]
Text = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00]*$")]
Period = Literal["day", "week", "month"]


class LimitFields(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Text | None = None
    models: list[Text] | None = Field(None, description="Model groups it may call; null: every group.")
    rpm: Count = Field(None, description="Requests per minute.")
    tpm: Count = Field(None, description="Tokens (input + output) per minute.")
    max_parallel: Count = Field(None, description="Requests in flight at once.")
    budget_usd: Money = None
    budget_period: Period | None = Field(None, description="The budget resets every day/week/month (UTC); null: a lifetime budget.")
    conversation_max_requests: Count = Field(None, description="Requests per x-faregate-conversation-id.")
    conversation_max_cost_usd: Money = None
    metadata: dict[str, Any] | None = Field(None, description="Free JSON object, returned as given.")


class KeyFields(LimitFields):
    """POST /admin/keys and PATCH /admin/keys/{id}: every field optional; in a PATCH only the
    fields sent change and null clears one."""

    user: Id | None = Field(None, description="The user it belongs to (its limits apply too).")
    team: Id | None = Field(None, description="The team it belongs to (its limits apply too).")
    expires_at: dt.datetime | None = Field(None, description="ISO 8601; without a zone, UTC.")


class SubjectFields(LimitFields):
    """PATCH /admin/teams/{id} and /admin/users/{id}."""


class SubjectCreate(SubjectFields):
    id: Id


class _View(BaseModel):
    name: str | None
    models: list[str] | None
    rpm: int | None
    tpm: int | None
    max_parallel: int | None
    budget_usd: str | None = Field(description="Exact decimal string.")
    budget_period: Period | None
    conversation_max_requests: int | None
    conversation_max_cost_usd: str | None
    metadata: dict[str, Any] | None
    created_at: dt.datetime
    updated_at: dt.datetime
    spend_usd: str = Field(description="Lifetime spend from the ledger, exact, 9 decimals.")


class KeyView(_View):
    id: str
    key_hint: str = Field(description="'sk-fg-…' and the last four characters.")
    user: str | None
    team: str | None
    expires_at: dt.datetime | None
    revoked: bool
    revoked_at: dt.datetime | None


class KeyCreated(KeyView):
    key: str = Field(description="The secret: shown this once, never again.")


class KeyRotated(BaseModel):
    id: str
    key: str = Field(description="The new secret: shown this once; the old one no longer works.")
    key_hint: str


class SubjectView(_View):
    id: str


class KeyList(BaseModel):
    data: list[KeyView]


class SubjectList(BaseModel):
    data: list[SubjectView]


# -- helpers ----------------------------------------------------------------------------------


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


async def _body(request: Request, model: type[M]) -> tuple[M, dict[str, Any]]:
    """The JSON body as `model`, and the fields actually sent (PATCH semantics)."""
    limit = request.app.state.gateway.config.server.max_body_bytes
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise GatewayError(413, f"Request body is larger than the {limit}-byte limit (server.max_body_bytes).",
                               code="request_too_large")
        parts.append(chunk)
    raw = b"".join(parts)
    try:
        doc = json.loads(raw, parse_float=Decimal, parse_constant=_no_constant) if raw.strip() else {}
    except (ValueError, RecursionError) as exc:
        raise GatewayError(400, f"The request body is not valid JSON: {exc}.", code="invalid_json") from None
    if not isinstance(doc, dict):
        raise GatewayError(400, "The request body must be a JSON object.", code="invalid_json")
    try:
        parsed = model.model_validate(doc)
    except ValidationError as exc:
        raise _invalid(exc.errors()) from None
    return parsed, parsed.model_dump(exclude_unset=True)


def _doc(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


_FIRST = ("id", "key", "name", "key_hint", "user", "team")


def _out(model: type[BaseModel], fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` as the documented model serializes them, identity first."""
    doc = model.model_validate(fields).model_dump(mode="json")
    return {**{k: doc[k] for k in _FIRST if k in doc}, **doc}


def _key(row: Any, status: int = 200, **extra: Any) -> JSONResponse:
    model = KeyCreated if "key" in extra else KeyView
    return JSONResponse(_out(model, {**store.key_fields(row), **extra}), status_code=status)


def _subject(row: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(_out(SubjectView, store.subject_fields(row)), status_code=status)


router = APIRouter(
    prefix="/admin", tags=["Admin"], route_class=AdminRoute,
    # Documentation only (the Authorize button in /docs): AdminRoute does the checking.
    dependencies=[Security(HTTPBearer(auto_error=False, description="The master key")),
                  Security(APIKeyHeader(name="x-api-key", auto_error=False, description="The master key"))],
    responses={401: {"description": "No key, or not a valid one"},
               403: {"description": "A virtual key (admin_only), or the gateway has no master key"}},
)

# -- keys ---------------------------------------------------------------------------------------


@router.post("/keys", status_code=201, response_model=KeyCreated, openapi_extra=_doc(KeyFields),
             summary="Create a virtual key (the secret is returned this once)")
async def create_key(request: Request) -> Response:
    _, fields = await _body(request, KeyFields)
    gw = request.app.state.gateway
    record, secret = await store.create_key(gw, fields)
    return _key(await store.get_key(gw, record.id), 201, key=secret)


@router.get("/keys", response_model=KeyList, summary="List virtual keys")
async def list_keys(request: Request, user: str | None = None, team: str | None = None,
                    include_revoked: bool = False) -> Response:
    rows = await store.list_keys(request.app.state.gateway, user, team, include_revoked)
    return JSONResponse({"data": [_out(KeyView, store.key_fields(r)) for r in rows]})


@router.get("/keys/{id}", response_model=KeyView, summary="One virtual key")
async def get_key(request: Request, id: str) -> Response:
    return _key(await store.get_key(request.app.state.gateway, id))


@router.patch("/keys/{id}", response_model=KeyView, openapi_extra=_doc(KeyFields),
              summary="Change a key: only the fields sent; null clears")
async def update_key(request: Request, id: str) -> Response:
    _, fields = await _body(request, KeyFields)
    return _key(await store.update_key(request.app.state.gateway, id, fields))


@router.delete("/keys/{id}", response_model=KeyView, summary="Revoke a key (it stops working at once)")
async def revoke_key(request: Request, id: str) -> Response:
    return _key(await store.revoke_key(request.app.state.gateway, id))


@router.post("/keys/{id}/rotate", response_model=KeyRotated,
             summary="New secret for the same key (id, limits, spend kept); the old secret stops working")
async def rotate_key(request: Request, id: str) -> Response:
    record, secret = await store.rotate_key(request.app.state.gateway, id)
    return JSONResponse(_out(KeyRotated, {"id": record.id, "key": secret, "key_hint": hint(secret)}))


# -- teams and users ------------------------------------------------------------------------------


def _subject_routes(kind: SubjectKind, plural: str) -> None:
    async def create(request: Request) -> Response:
        body, fields = await _body(request, SubjectCreate)
        fields.pop("id")
        return _subject(await store.create_subject(request.app.state.gateway, kind, body.id, fields), 201)

    async def list_all(request: Request) -> Response:
        rows = await store.list_subjects(request.app.state.gateway, kind)
        return JSONResponse({"data": [_out(SubjectView, store.subject_fields(r)) for r in rows]})

    async def get(request: Request, id: str) -> Response:
        return _subject(await store.get_subject(request.app.state.gateway, kind, id))

    async def patch(request: Request, id: str) -> Response:
        _, fields = await _body(request, SubjectFields)
        return _subject(await store.update_subject(request.app.state.gateway, kind, id, fields))

    async def remove(request: Request, id: str) -> Response:
        return _subject(await store.delete_subject(request.app.state.gateway, kind, id))

    add = router.add_api_route
    add(f"/{plural}", create, methods=["POST"], status_code=201, response_model=SubjectView, name=f"create_{kind}",
        openapi_extra=_doc(SubjectCreate), summary=f"Create a {kind} (409 if the id exists)")
    add(f"/{plural}", list_all, methods=["GET"], response_model=SubjectList, name=f"list_{plural}", summary=f"List {plural}")
    add(f"/{plural}/{{id}}", get, methods=["GET"], response_model=SubjectView, name=f"get_{kind}", summary=f"One {kind}")
    add(f"/{plural}/{{id}}", patch, methods=["PATCH"], response_model=SubjectView, name=f"update_{kind}",
        openapi_extra=_doc(SubjectFields), summary=f"Change a {kind}: only the fields sent; null clears")
    add(f"/{plural}/{{id}}", remove, methods=["DELETE"], response_model=SubjectView, name=f"delete_{kind}",
        summary=f"Delete a {kind} (its keys keep working without its limits)")


_subject_routes("team", "teams")
_subject_routes("user", "users")


# -- spend and the ledger -------------------------------------------------------------------------


@router.get("/spend", response_model=ledger.SpendReport, summary="Spend grouped by key, user, team, end user, feature, model, deployment or day")
async def spend(request: Request, group_by: ledger.GroupBy = "key",
                start: str | None = Query(None, description="ISO date or datetime; UTC unless it says otherwise"),
                end: str | None = Query(None, description="A date includes that day; a datetime is exclusive")) -> Response:
    since, until = ledger.period(start, end)
    rows = await ledger.spend_by(await request.app.state.gateway.db(), group_by, since, until)
    return JSONResponse({"rows": rows})


@router.get("/requests/{request_id}", response_model=ledger.LedgerEntry, summary="One request's ledger row")
async def get_request(request: Request, request_id: str) -> Response:
    entry = await ledger.ledger_entry(await request.app.state.gateway.db(), request_id)
    if entry is None:
        raise GatewayError(404, f"No request '{request_id}' in the ledger (rows are written within "
                           "about a second of the answer).", code="request_not_found", param="request_id")
    return JSONResponse(ledger.LedgerEntry.model_validate(entry).model_dump(mode="json"))
