"""hold leases, and what a call cost beyond what could be billed

A hold was released by the sweeper once it was an hour old, even while its stream was still live
(which was then billed nothing). A hold now carries a lease (`lease_until`) that a live call renews;
the sweeper releases only holds whose lease has passed. Holds open when this runs get a lease of
their creation plus one hour, so they are swept no later than before.

`unbilled_micro` counts what a provider's reported usage cost beyond what the hold, the key's quota
and the account's balance could cover.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 09:00:00
"""

from collections.abc import Sequence
from datetime import timedelta

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The lease open holds get: what the sweeper used to wait for.
BACKFILL_LEASE = timedelta(hours=1)
OPEN = sa.text("status = 'reserved'")


def upgrade() -> None:
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("unbilled_micro", sa.BigInteger(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_check_constraint(
            op.f("ck_usage_records_unbilled_not_negative"), "unbilled_micro >= 0"
        )

    # Open holds are few (calls in flight, or left by a crash): one small update each, on any backend.
    records = sa.table(
        "usage_records",
        sa.column("id", sa.String),
        sa.column("status", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("lease_until", sa.DateTime(timezone=True)),
    )
    bind = op.get_bind()
    open_holds = bind.execute(
        sa.select(records.c.id, records.c.created_at).where(records.c.status == "reserved")
    ).all()
    for call_id, created_at in open_holds:
        bind.execute(
            records.update().where(records.c.id == call_id).values(lease_until=created_at + BACKFILL_LEASE)
        )

    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.alter_column("unbilled_micro", server_default=None)
        batch_op.create_index(
            "ix_usage_records_open_lease_until",
            ["lease_until"],
            unique=False,
            sqlite_where=OPEN,
            postgresql_where=OPEN,
        )


def downgrade() -> None:
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_records_open_lease_until", sqlite_where=OPEN, postgresql_where=OPEN)
        batch_op.drop_constraint(op.f("ck_usage_records_unbilled_not_negative"), type_="check")
        batch_op.drop_column("lease_until")
        batch_op.drop_column("unbilled_micro")
