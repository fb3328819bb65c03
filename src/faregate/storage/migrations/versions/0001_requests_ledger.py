"""The request ledger.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "requests",
        sa.Column("request_id", sa.String(128), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("endpoint", sa.String(16), nullable=False),
        sa.Column("client_protocol", sa.String(16), nullable=False),
        sa.Column("key_id", sa.String(64)),
        sa.Column("user_id", sa.String(128)),
        sa.Column("team_id", sa.String(128)),
        sa.Column("end_user", sa.String(256)),
        sa.Column("feature", sa.String(128)),
        sa.Column("conversation_id", sa.String(128)),
        sa.Column("requested_model", sa.String(256), nullable=False),
        sa.Column("deployment", sa.String(256)),
        sa.Column("provider", sa.String(32)),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("error_code", sa.String(64)),
        sa.Column("cache", sa.String(16)),
        sa.Column("stream", sa.Boolean, nullable=False),
        sa.Column("input_tokens", sa.Integer, nullable=False),
        sa.Column("cached_input_tokens", sa.Integer, nullable=False),
        sa.Column("cache_write_tokens", sa.Integer, nullable=False),
        sa.Column("output_tokens", sa.Integer, nullable=False),
        sa.Column("reasoning_tokens", sa.Integer, nullable=False),
        sa.Column("cost_nusd", sa.BigInteger, nullable=False),
        sa.Column("priced", sa.Boolean, nullable=False),
        sa.Column("usage_estimated", sa.Boolean, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("ttft_ms", sa.Float),
    )
    for col in ("created_at", "key_id", "user_id", "team_id", "feature"):
        op.create_index(f"ix_requests_{col}", "requests", [col])


def downgrade() -> None:
    op.drop_table("requests")
