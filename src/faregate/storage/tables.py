"""Table definitions (SQLAlchemy Core). Migrations in `migrations/versions` create them."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

# One row per request that entered the pipeline. Money is an integer count of nano-dollars
# (1e-9 USD): exact on every database, summed without rounding, and cheap to write.
requests = Table(
    "requests",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("endpoint", String(16), nullable=False),
    Column("client_protocol", String(16), nullable=False),
    Column("key_id", String(64)),  # who authenticated; never the key itself (indexes: below)
    Column("user_id", String(128)),
    Column("team_id", String(128)),
    Column("end_user", String(256)),
    Column("feature", String(128)),
    Column("conversation_id", String(128), index=True),
    Column("requested_model", String(256), nullable=False),
    Column("deployment", String(256)),
    Column("provider", String(32)),
    Column("attempts", Integer, nullable=False),
    Column("status", Integer, nullable=False),
    Column("error_code", String(64)),
    Column("cache", String(16)),
    Column("stream", Boolean, nullable=False),
    Column("input_tokens", Integer, nullable=False),
    Column("cached_input_tokens", Integer, nullable=False),
    Column("cache_write_tokens", Integer, nullable=False),
    Column("output_tokens", Integer, nullable=False),
    Column("reasoning_tokens", Integer, nullable=False),
    Column("cost_nusd", BigInteger, nullable=False),
    Column("saved_nusd", BigInteger, nullable=False, default=0, server_default="0"),  # a cache hit: what the upstream would have cost
    Column("priced", Boolean, nullable=False),
    Column("usage_estimated", Boolean, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("ttft_ms", Float),
    Column("tags", Text),  # the request's `metadata` tags as a JSON object (text), or NULL
    Column("client_request_id", String(128)),  # the client's own x-client-request-id, if sent
)

# Per column a spend total is grouped or filtered by (migration 0005): with created_at and the
# money, so a key's (user's, team's…) spend over a period is read from the index alone (budget
# seeding, /admin/spend, the dashboard's breakdowns, which walk the distinct values).
for _name in ("requested_model", "key_id", "user_id", "team_id", "feature"):
    Index(f"ix_requests_{_name}_created_at", requests.c[_name], requests.c.created_at, requests.c.cost_nusd,
          requests.c.saved_nusd)
# The dashboard's time series (/ui): each ranges over created_at and reads only these columns.
Index("ix_requests_dashboard", *(requests.c[_name] for _name in (
    "created_at", "provider", "cache", "status", "error_code", "cost_nusd", "saved_nusd", "latency_ms",
    "ttft_ms")))
del _name


# The request log (logs/): per request the trace id, sizes and, by policy, the redacted request
# and response bodies. `request_id` is the ledger row's (no foreign key: the two tables are
# written by separate batching sinks, and log rows are deleted by retention while ledger rows,
# which are money, are kept). Searches filter on one column and page newest first: each filter
# column has an index together with `created_at`.
request_logs = Table(
    "request_logs",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("key_id", String(64)),
    Column("user_id", String(128)),
    Column("feature", String(128)),
    Column("model", String(256), nullable=False),
    Column("status", Integer, nullable=False),
    Column("trace_id", String(32), index=True),
    Column("request_bytes", Integer),  # size of the request's JSON (always, even without bodies)
    Column("response_bytes", Integer),
    Column("request_body", Text),  # redacted JSON text, or NULL (metadata mode, not sampled)
    Column("response_body", Text),
    Column("redactions", Integer, nullable=False, server_default="0"),  # findings replaced
    Column("truncated", Boolean, nullable=False, server_default="0"),  # a body was cut
    *(Index(f"ix_request_logs_{col}_created_at", col, "created_at")
      for col in ("key_id", "user_id", "feature", "model", "status")),
)


def _limit_columns() -> list[Column]:  # type: ignore[type-arg]
    """What keys, users and teams each carry: the model groups they may call and their limits.
    NULL means "no limit of this kind" (a request is held to the tightest of key, user, team)."""
    return [
        Column("models", JSON),  # list of model groups, or NULL for all
        Column("rpm", Integer),
        Column("tpm", Integer),
        Column("max_parallel", Integer),
        Column("budget_nusd", BigInteger),
        Column("budget_period", String(8)),  # day | week | month | NULL (lifetime)
        Column("conversation_max_requests", Integer),
        Column("conversation_max_cost_nusd", BigInteger),
        Column("metadata", JSON),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False, index=True),
    ]


# Virtual keys. The secret itself is never stored: `key_hash` is HMAC-SHA256 of it under the
# server's secret key, so a stolen table cannot be brute-forced offline.
keys = Table(
    "keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(256)),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("key_hint", String(16), nullable=False),  # "sk-fg-…abcd", to recognise a key in lists
    Column("user_id", String(128), index=True),
    Column("team_id", String(128), index=True),
    Column("expires_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    *_limit_columns(),
)

teams = Table("teams", metadata, Column("id", String(128), primary_key=True),
              Column("name", String(256)), *_limit_columns())

users = Table("users", metadata, Column("id", String(128), primary_key=True),
              Column("name", String(256)), *_limit_columns())
