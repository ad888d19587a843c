"""The events table: one row per allocation start or end, keyed by its deterministic id.

Sizes are written out (not imported from events.py): a migration stays what it was when it ran.

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
        "accounting_events",
        sa.Column("event_id", sa.String(70), primary_key=True),
        sa.Column("allocation", sa.String(64), nullable=False),
        sa.Column("phase", sa.String(5), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_name", sa.String(64), nullable=False),
        sa.Column("project", sa.String(63), nullable=False),
        sa.Column("model", sa.String(63), nullable=False),
        sa.Column("kind", sa.String(9), nullable=False),
        sa.Column("site", sa.String(63), nullable=False),
        sa.Column("units", sa.Integer, nullable=False),
        sa.Column("cpu_millis", sa.Integer, nullable=False),
        sa.Column(
            "recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint("event_id = allocation || ':' || phase", name="event_id_is_phase"),
        sa.CheckConstraint("phase IN ('start', 'end')", name="phase_known"),
        sa.CheckConstraint("kind IN ('notebook', 'batch', 'offloaded')", name="kind_known"),
        sa.CheckConstraint("at = date_trunc('second', at)", name="at_whole_second"),
        sa.CheckConstraint("units BETWEEN 0 AND 1024", name="units_bounded"),
        sa.CheckConstraint("cpu_millis BETWEEN 0 AND 10000000", name="cpu_bounded"),
    )
    op.create_index("accounting_events_phase_at", "accounting_events", ["phase", "at"])
    op.create_index("accounting_events_allocation", "accounting_events", ["allocation"])


def downgrade() -> None:
    op.drop_table("accounting_events")
