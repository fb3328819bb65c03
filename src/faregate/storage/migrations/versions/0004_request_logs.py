"""The request log: trace id, sizes and (by policy) redacted bodies per request.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_SEARCHED = ("key_id", "user_id", "feature", "model", "status")


def upgrade() -> None:
    op.create_table(
        "request_logs",
        sa.Column("request_id", sa.String(128), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(64)),
        sa.Column("user_id", sa.String(128)),
        sa.Column("feature", sa.String(128)),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("trace_id", sa.String(32)),
        sa.Column("request_bytes", sa.Integer),
        sa.Column("response_bytes", sa.Integer),
        sa.Column("request_body", sa.Text),
        sa.Column("response_body", sa.Text),
        sa.Column("redactions", sa.Integer, nullable=False, server_default="0"),
        sa.Column("truncated", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_request_logs_created_at", "request_logs", ["created_at"])
    op.create_index("ix_request_logs_trace_id", "request_logs", ["trace_id"])
    for col in _SEARCHED:
        op.create_index(f"ix_request_logs_{col}_created_at", "request_logs", [col, "created_at"])


def downgrade() -> None:
    op.drop_table("request_logs")
