"""Table definitions (SQLAlchemy Core). Migrations in `migrations/versions` create them."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
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
    Column("key_id", String(64), index=True),  # who authenticated; never the key itself
    Column("user_id", String(128), index=True),
    Column("team_id", String(128), index=True),
    Column("end_user", String(256)),
    Column("feature", String(128), index=True),
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
