"""The tables, as typed SQLAlchemy 2 models. Amounts are integer micro-credits (BigInteger).

Alembic migrations in `server/db/migrations/versions/` create exactly these tables; a test checks
that the two never drift apart.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> str:
    """A new random UUID, as text (portable across SQLite and PostgreSQL)."""
    return str(uuid.uuid4())


def utcnow() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """A stored time as timezone-aware UTC (SQLite hands back naive datetimes; every stored time is UTC)."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    """Base of every model, with constraint names Alembic can rely on."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Account(Base):
    """A credit-holding account: a person (Supabase user) or an autonomous agent."""

    __tablename__ = "accounts"
    __table_args__ = (
        UniqueConstraint("kind", "external_id", name="uq_accounts_kind_external_id"),
        CheckConstraint("kind IN ('person', 'agent')", name="kind"),
        CheckConstraint("balance_micro >= 0", name="balance_not_negative"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(16))
    #: The Supabase user id of a person, or the chosen `agentId` of an agent.
    external_id: Mapped[str] = mapped_column(String(128))
    display_name: Mapped[str | None] = mapped_column(String(120))
    skill_md_url: Mapped[str | None] = mapped_column(String(1000))
    #: Spendable credits; changed only together with a ledger entry, never below zero.
    balance_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    granted_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    purchased_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    used_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class Profile(Base):
    """What the gateway keeps about a person, created at bootstrap."""

    __tablename__ = "profiles"

    #: The Supabase user id (the token's `sub`).
    user_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), unique=True)
    email: Mapped[str | None] = mapped_column(String(320))
    display_name: Mapped[str | None] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class ApiKey(Base):
    """An API key. Only a hash of the secret is stored; the prefix lets people recognise it."""

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint("used_micro >= 0", name="used_not_negative"),
        CheckConstraint("quota_micro IS NULL OR quota_micro >= 0", name="quota_not_negative"),
        Index("ix_api_keys_account_id_created_at", "account_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(100))
    #: The first characters of the secret, shown in lists (`cc_live_AbC123`).
    prefix: Mapped[str] = mapped_column(String(32))
    #: A keyed hash of the secret; the secret itself is never stored.
    secret_hash: Mapped[str] = mapped_column(String(128), unique=True)
    #: The most this key may spend; NULL when only the account balance limits it.
    quota_micro: Mapped[int | None] = mapped_column(BigInteger)
    used_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deactivated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LedgerEntry(Base):
    """One change of an account's credits. Append-only; the idempotency key makes it happen once."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        CheckConstraint("kind IN ('grant', 'revoke', 'purchase', 'debit', 'refund')", name="kind"),
        Index("ix_ledger_entries_account_id_created_at", "account_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="RESTRICT"))
    key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(16))
    #: Signed change in micro-credits (negative for debits and revocations).
    amount_micro: Mapped[int] = mapped_column(BigInteger)
    #: The account balance right after this entry.
    balance_after_micro: Mapped[int] = mapped_column(BigInteger)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    #: What caused the entry: a usage record id, a payment id, an operator's reason.
    reference: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class UsageRecord(Base):
    """One inference request: what was routed where, the tokens and the credits billed."""

    __tablename__ = "usage_records"
    __table_args__ = (
        CheckConstraint("status IN ('reserved', 'settled', 'failed', 'released')", name="status"),
        CheckConstraint("reserved_micro >= 0 AND billed_micro >= 0", name="amounts_not_negative"),
        CheckConstraint("unbilled_micro >= 0", name="unbilled_not_negative"),
        Index("ix_usage_records_account_id_created_at", "account_id", "created_at"),
        Index("ix_usage_records_key_id_created_at", "key_id", "created_at"),
        # The sweeper's question ("which open holds' leases have passed?"), over open holds only.
        Index(
            "ix_usage_records_open_lease_until",
            "lease_until",
            sqlite_where=text("status = 'reserved'"),
            postgresql_where=text("status = 'reserved'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    #: The request id (Envoy's `x-request-id`); one usage record per request.
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="RESTRICT"))
    key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(16), default="reserved")
    requested_model: Mapped[str] = mapped_column(String(200))
    model: Mapped[str | None] = mapped_column(String(200))
    provider: Mapped[str | None] = mapped_column(String(64))
    price_rule: Mapped[str | None] = mapped_column(String(64))
    routing_profile: Mapped[str | None] = mapped_column(String(32))
    routing_tier: Mapped[str | None] = mapped_column(String(16))
    routing_budget: Mapped[str | None] = mapped_column(String(16))
    routing_intelligence: Mapped[str | None] = mapped_column(String(16))
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    reserved_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    billed_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    #: What the provider's reported usage cost beyond what the hold, the key's quota and the account's
    #: balance could cover: owed to the provider, never billed, counted here (and in a metric).
    unbilled_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    error_code: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: While the call may still be running: a live call renews it; past it, the sweeper may release the
    #: hold (its replica died). NULL only on records closed before leases existed.
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class X402Payment(Base):
    """An x402 payment. Its identity is the EIP-3009 authorisation (chain id, asset, payer, nonce), the
    same whether it came as x402 v1 or v2; it can be credited once, ever. Its states are explained in
    `server.domain.payments.settlement`; `unknown` (a settle whose outcome was not seen) is never
    taken for `failed`."""

    __tablename__ = "x402_payments"
    __table_args__ = (
        UniqueConstraint("chain_id", "asset", "payer", "nonce", name="uq_x402_payments_authorization"),
        CheckConstraint(
            "status IN ('pending', 'settling', 'settled', 'failed', 'expired', 'unknown')", name="status"
        ),
        Index("ix_x402_payments_account_id_created_at", "account_id", "created_at"),
        Index("ix_x402_payments_status_lease_until", "status", "lease_until"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="RESTRICT"))
    key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))
    x402_version: Mapped[int] = mapped_column(Integer)
    #: The network as the payer named it (`base-sepolia` in v1, `eip155:84532` in v2), for receipts.
    network: Mapped[str] = mapped_column(String(32))
    #: The EIP-155 chain id; NULL only on a duplicate authorisation migration 0004 found (see its reason).
    chain_id: Mapped[int | None] = mapped_column(BigInteger)
    asset: Mapped[str] = mapped_column(String(42))
    payer: Mapped[str] = mapped_column(String(42))
    pay_to: Mapped[str] = mapped_column(String(42))
    #: The EIP-3009 authorisation nonce (32 bytes, hex).
    nonce: Mapped[str] = mapped_column(String(66))
    #: The authorisation's `validBefore` (Unix seconds); 0 when not known (rows older than 0004).
    valid_before: Mapped[int] = mapped_column(BigInteger, default=0)
    #: The amount in the asset's smallest unit (USDC: 6 decimals).
    amount_atomic: Mapped[int] = mapped_column(BigInteger)
    #: The amount in millionths of a US dollar.
    amount_usd_micro: Mapped[int] = mapped_column(BigInteger)
    credits_micro: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    #: Until when the request (or reconciler) working on the payment owns it; past it, another may.
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: The chain's block number when the payment was first seen (where to start looking for it).
    from_block: Mapped[int | None] = mapped_column(BigInteger)
    tx_hash: Mapped[str | None] = mapped_column(String(80), unique=True)
    error_reason: Mapped[str | None] = mapped_column(String(200))
    #: What closed it: `facilitator`, `chain` or `operator`.
    resolved_by: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class X402PaymentEvent(Base):
    """One change of a payment's state, who made it and why: the audit trail operators read."""

    __tablename__ = "x402_payment_events"
    __table_args__ = (Index("ix_x402_payment_events_payment_id_created_at", "payment_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    payment_id: Mapped[str] = mapped_column(ForeignKey("x402_payments.id", ondelete="CASCADE"))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    #: `request`, `reconciler`, `operator` or `migration`.
    actor: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RateLimit(Base):
    """A fixed-window counter shared by every replica (for example agent registrations per address)."""

    __tablename__ = "rate_limits"

    #: What is limited and for whom, e.g. `register:203.0.113.7`.
    bucket: Mapped[str] = mapped_column(String(200), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    count: Mapped[int] = mapped_column(Integer)


class ModelCooldown(Base):
    """A model resting after a 429 or an overload, shared by every replica."""

    __tablename__ = "model_cooldowns"

    model_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    reason: Mapped[str] = mapped_column(String(64))


class StoredResponse(Base):
    """A Responses API answer its account asked to `store`: to read back, delete, or continue from
    with `previous_response_id` on any replica. Only its account can see it."""

    __tablename__ = "responses"

    #: `resp_` and 32 hex digits (the call's id).
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(200))
    previous_response_id: Mapped[str | None] = mapped_column(String(40))
    #: JSON: the conversation so far in Chat Completions' shape, this response's output included
    #: (its instructions are not: a continuation does not inherit them).
    conversation: Mapped[str] = mapped_column(Text)
    #: JSON: the response object as it was served.
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
