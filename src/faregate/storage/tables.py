"""Table definitions (SQLAlchemy Core). Migrations in `migrations/versions` create them."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
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
    Column("conversation_id", String(128)),
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
    Column("priced", Boolean, nullable=False),
    Column("usage_estimated", Boolean, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("ttft_ms", Float),
)
