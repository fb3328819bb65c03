"""Virtual keys, teams and users; ledger tags, client request id and a conversation index.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _limit_columns() -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column("models", sa.JSON),
        sa.Column("rpm", sa.Integer),
        sa.Column("tpm", sa.Integer),
        sa.Column("max_parallel", sa.Integer),
        sa.Column("budget_nusd", sa.BigInteger),
        sa.Column("budget_period", sa.String(8)),
        sa.Column("conversation_max_requests", sa.Integer),
        sa.Column("conversation_max_cost_nusd", sa.BigInteger),
        sa.Column("metadata", sa.JSON),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(256)),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("key_hint", sa.String(16), nullable=False),
        sa.Column("user_id", sa.String(128)),
        sa.Column("team_id", sa.String(128)),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        *_limit_columns(),
    )
    for col in ("user_id", "team_id", "updated_at"):
        op.create_index(f"ix_keys_{col}", "keys", [col])
    for table in ("teams", "users"):
        op.create_table(table, sa.Column("id", sa.String(128), primary_key=True),
                        sa.Column("name", sa.String(256)), *_limit_columns())
        op.create_index(f"ix_{table}_updated_at", table, ["updated_at"])
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("tags", sa.Text))
        batch.add_column(sa.Column("client_request_id", sa.String(128)))
    op.create_index("ix_requests_conversation_id", "requests", ["conversation_id"])


def downgrade() -> None:
    op.drop_index("ix_requests_conversation_id", "requests")
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("client_request_id")
        batch.drop_column("tags")
    for table in ("users", "teams", "keys"):
        op.drop_table(table)
