"""Ledger indexes for the dashboard (/ui) and per-subject spend.

- Per column a spend total is grouped or filtered by (model, key, user, team, feature): that
  column, created_at and the money. A period's total for one value is read from the index alone,
  and the dashboard's breakdowns walk the distinct values without sorting the period's rows
  (SQLite has no hash aggregation). They replace 0001's single-column indexes on key_id,
  user_id, team_id and feature, which are their prefixes.
- ix_requests_dashboard: every time-series aggregate ranges over created_at and reads only these
  columns, so it never visits the table's rows.

bench/dashboard.py times the dashboard on 1M rows.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

REPLACED = ("key_id", "user_id", "team_id", "feature")
SPEND = ("requested_model", "key_id", "user_id", "team_id", "feature")
DASHBOARD = ["created_at", "provider", "cache", "status", "error_code", "cost_nusd", "saved_nusd",
             "latency_ms", "ttft_ms"]


def upgrade() -> None:
    for col in REPLACED:
        op.drop_index(f"ix_requests_{col}", table_name="requests")
    for col in SPEND:
        op.create_index(f"ix_requests_{col}_created_at", "requests", [col, "created_at", "cost_nusd", "saved_nusd"])
    op.create_index("ix_requests_dashboard", "requests", DASHBOARD)


def downgrade() -> None:
    op.drop_index("ix_requests_dashboard", table_name="requests")
    for col in SPEND:
        op.drop_index(f"ix_requests_{col}_created_at", table_name="requests")
    for col in REPLACED:
        op.create_index(f"ix_requests_{col}", "requests", [col])
