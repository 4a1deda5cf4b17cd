"""x402 payments: one identity for v1 and v2, states that tell the truth, an audit trail

A payment was unique per *network label*, which differs between x402 v1 (`base-sepolia`) and v2
(`eip155:84532`), so one signed authorisation re-wrapped as v1 got a second row. Its identity is now
(chain id, asset, payer, nonce). Rows this migration finds doubled keep the first (a settled one if
any) and lose their chain id, with a reason an operator can find.

Outcomes the old code could not see are `unknown` now: a row left `pending` (its request died mid-settle)
and a row failed for "facilitator unavailable" (its settle may have landed on chain).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 08:00:00
"""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW_STATES = "status IN ('pending', 'settling', 'settled', 'failed', 'expired', 'unknown')"
OLD_STATES = "status IN ('pending', 'settled', 'failed')"
#: x402 network labels → EIP-155 chain ids (both protocol versions' names).
CHAIN_IDS = {"base-sepolia": 84532, "eip155:84532": 84532, "base": 8453, "eip155:8453": 8453}


def upgrade() -> None:
    with op.batch_alter_table("x402_payments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("chain_id", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("valid_before", sa.BigInteger(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("from_block", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("resolved_by", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.drop_constraint("uq_x402_payments_authorization", type_="unique")
        batch_op.drop_constraint(op.f("ck_x402_payments_status"), type_="check")
        batch_op.create_check_constraint(op.f("ck_x402_payments_status"), NEW_STATES)

    op.create_table(
        "x402_payment_events",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("payment_id", sa.String(length=36), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["x402_payments.id"],
            name=op.f("fk_x402_payment_events_payment_id_x402_payments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_x402_payment_events")),
    )
    with op.batch_alter_table("x402_payment_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_x402_payment_events_payment_id_created_at", ["payment_id", "created_at"], unique=False
        )

    _move_rows()

    with op.batch_alter_table("x402_payments", schema=None) as batch_op:
        batch_op.alter_column("valid_before", server_default=None)
        batch_op.alter_column("updated_at", nullable=False)
        batch_op.create_unique_constraint(
            "uq_x402_payments_authorization", ["chain_id", "asset", "payer", "nonce"]
        )
        batch_op.create_index("ix_x402_payments_status_lease_until", ["status", "lease_until"], unique=False)


def _move_rows() -> None:
    """Chain ids from the network labels; doubled authorisations and unseen outcomes marked."""
    bind = op.get_bind()
    payments = sa.table(
        "x402_payments",
        sa.column("id", sa.String),
        sa.column("network", sa.String),
        sa.column("chain_id", sa.BigInteger),
        sa.column("asset", sa.String),
        sa.column("payer", sa.String),
        sa.column("nonce", sa.String),
        sa.column("status", sa.String),
        sa.column("error_reason", sa.String),
        sa.column("created_at", sa.DateTime),
        sa.column("updated_at", sa.DateTime),
    )
    events = sa.table(
        "x402_payment_events",
        sa.column("id", sa.String),
        sa.column("payment_id", sa.String),
        sa.column("from_status", sa.String),
        sa.column("to_status", sa.String),
        sa.column("actor", sa.String),
        sa.column("detail", sa.String),
        sa.column("created_at", sa.DateTime),
    )
    bind.execute(sa.update(payments).values(updated_at=payments.c.created_at))
    for network, chain_id in CHAIN_IDS.items():
        bind.execute(sa.update(payments).where(payments.c.network == network).values(chain_id=chain_id))
    rows = bind.execute(
        sa.select(
            payments.c.id,
            payments.c.chain_id,
            payments.c.asset,
            payments.c.payer,
            payments.c.nonce,
            payments.c.status,
        ).order_by(payments.c.created_at)
    ).all()
    kept: dict[tuple[object, ...], tuple[str, str]] = {}
    doubled: list[tuple[str, str]] = []
    for row in rows:
        identity = (row.chain_id, row.asset, row.payer, row.nonce)
        first = kept.get(identity)
        if first is None:
            kept[identity] = (row.id, row.status)
        elif row.status == "settled" and first[1] != "settled":
            doubled.append(first)
            kept[identity] = (row.id, row.status)
        else:
            doubled.append((row.id, row.status))
    now = datetime.now(UTC)
    for payment_id, status in doubled:
        reason = "duplicate authorisation (migration 0004): kept in another row; review"
        bind.execute(
            sa.update(payments).where(payments.c.id == payment_id).values(chain_id=None, error_reason=reason)
        )
        _event(bind, events, payment_id, status, status, reason, now)
    # A pending row's request died mid-settle, and "facilitator unavailable" may have settled on chain.
    unseen = sa.or_(
        payments.c.status == "pending",
        sa.and_(payments.c.status == "failed", payments.c.error_reason.like("facilitator unavailable%")),
    )
    for payment_id, status in bind.execute(
        sa.select(payments.c.id, payments.c.status).where(unseen, payments.c.chain_id.is_not(None))
    ).all():
        bind.execute(sa.update(payments).where(payments.c.id == payment_id).values(status="unknown"))
        _event(bind, events, payment_id, status, "unknown", "outcome not seen (migration 0004)", now)


def _event(
    bind: sa.Connection,
    events: sa.TableClause,
    payment_id: str,
    before: str,
    after: str,
    detail: str,
    now: datetime,
) -> None:
    bind.execute(
        sa.insert(events).values(
            id=str(uuid.uuid4()),
            payment_id=payment_id,
            from_status=before,
            to_status=after,
            actor="migration",
            detail=detail,
            created_at=now,
        )
    )


def downgrade() -> None:
    with op.batch_alter_table("x402_payments", schema=None) as batch_op:
        batch_op.drop_index("ix_x402_payments_status_lease_until")
        batch_op.drop_constraint("uq_x402_payments_authorization", type_="unique")
    op.drop_table("x402_payment_events")
    op.execute(
        "UPDATE x402_payments SET status = 'failed', error_reason = 'downgraded from ' || status "
        "WHERE status NOT IN ('pending', 'settled', 'failed')"
    )
    with op.batch_alter_table("x402_payments", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_x402_payments_status"), type_="check")
        batch_op.create_check_constraint(op.f("ck_x402_payments_status"), OLD_STATES)
        batch_op.create_unique_constraint(
            "uq_x402_payments_authorization", ["network", "asset", "payer", "nonce"]
        )
        for column in ("updated_at", "resolved_by", "from_block", "lease_until", "valid_before", "chain_id"):
            batch_op.drop_column(column)
