"""Quotas: the admins' adjustments to one subject's current period, and indexes for the usage
of one user or one project (what a quota check reads at each spawn and submission).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quota_adjustments",
        sa.Column("scope", sa.String(7), nullable=False),
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("model", sa.String(63), nullable=False),
        sa.Column("period", sa.String(5), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("extra_hours", sa.Float, nullable=False, server_default="0"),
        sa.Column("reset_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("changed_by", sa.String(64), nullable=False),
        sa.Column(
            "changed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("scope", "subject", "model", "period", "period_start"),
        sa.CheckConstraint("scope IN ('project', 'user')", name="adjustment_scope_known"),
        sa.CheckConstraint("period IN ('day', 'week', 'month')", name="adjustment_period_known"),
        sa.CheckConstraint("subject <> '*'", name="adjustment_subject_named"),
        sa.CheckConstraint(
            "extra_hours BETWEEN 0 AND 10000000", name="adjustment_extra_hours_bounded"
        ),
    )
    op.create_index("accounting_events_user_phase", "accounting_events", ["user_name", "phase"])
    op.create_index("accounting_events_project_phase", "accounting_events", ["project", "phase"])


def downgrade() -> None:
    op.drop_index("accounting_events_project_phase", "accounting_events")
    op.drop_index("accounting_events_user_phase", "accounting_events")
    op.drop_table("quota_adjustments")
