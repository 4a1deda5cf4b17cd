"""Holding and billing a call's credits: the one interface both storage backends implement
(`Billing`), what its steps answer, and the words and idempotency keys of every money step, written
here once.

A call's money moves in steps, each atomic on its own:
- `reserve` holds the worst case on the key's quota and the account's balance and opens the call's
  usage record with a lease (`Held`), or changes nothing and says why (`Refused`);
- `renew` extends the lease of a call that is still running (a long stream);
- `settle` or `release` closes the record, once: the first close wins, later ones change nothing;
- `release_abandoned` releases the holds whose lease has passed (their replica died), on any replica.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal, Protocol

from server.domain.errors import PaymentRequired

#: How a released call's usage record ends: `failed` (the call failed) or `released` (given back
#: before any answer reached anyone: the caller left first, or its replica died).
ReleaseStatus = Literal["failed", "released"]
#: The error code of a stream released because its caller left before it started.
ABANDONED = "abandoned"
#: The error code of a hold the sweeper released because its lease had passed.
LEASE_EXPIRED = "lease_expired"


class RefusalReason(enum.Enum):
    """Why a hold was refused."""

    QUOTA = "quota"
    BALANCE = "balance"


#: What the caller reads when a hold is refused (a 402 `insufficient_credits`).
REFUSAL_MESSAGES = {
    RefusalReason.QUOTA: "This key's credit quota does not cover this request.",
    RefusalReason.BALANCE: "Not enough credits for this request: top up or ask for fewer tokens.",
}


@dataclass(frozen=True)
class Held:
    """The hold is in place and the call's usage record is open."""

    amount_micro: int


@dataclass(frozen=True)
class Refused:
    """The hold was refused; nothing changed."""

    reason: RefusalReason

    @property
    def message(self) -> str:
        return REFUSAL_MESSAGES[self.reason]

    def error(self) -> PaymentRequired:
        """The error the caller gets."""
        return PaymentRequired(self.message, reason="INSUFFICIENT_CREDITS")


@dataclass(frozen=True)
class HoldRequest:
    """What to hold for one call, and what its usage record starts with."""

    call_id: str
    account_id: str
    key_id: str
    amount_micro: int
    requested_model: str
    stream: bool
    routing_profile: str


@dataclass(frozen=True)
class UsageFacts:
    """What a settled call consumed and where it went."""

    model: str
    provider: str
    price_rule: str
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    routing_tier: str | None = None
    routing_budget: str | None = None
    routing_intelligence: str | None = None


@dataclass(frozen=True)
class Settlement:
    """How a call was closed: what it was billed, what it cost beyond what could be billed, and
    whether this close did it (False: an earlier close had, and these are its numbers)."""

    billed_micro: int
    unbilled_micro: int
    closed_now: bool


def hold_key(call_id: str) -> str:
    """The idempotency key of a call's hold (its debit ledger entry)."""
    return f"usage:{call_id}:hold"


def return_key(call_id: str) -> str:
    """The idempotency key of what a call gives back (its refund ledger entry)."""
    return f"usage:{call_id}:return"


def overage_key(call_id: str) -> str:
    """The idempotency key of what a call is billed beyond its hold (a second debit entry)."""
    return f"usage:{call_id}:overage"


def reference(call_id: str) -> str:
    """The ledger entries' reference to a call."""
    return f"usage {call_id}"


class Billing(Protocol):
    """A call's money on one storage backend. Every step is atomic; closes are first-wins."""

    async def reserve(self, hold: HoldRequest) -> Held | Refused:
        """Hold `hold.amount_micro` on the key and the account and open the usage record, leased,
        or refuse and change nothing. A deactivated key raises `Unauthenticated`."""
        ...

    async def settle(self, call_id: str, cost_micro: int, facts: UsageFacts) -> Settlement:
        """Close the call at its real cost: within the hold, all of it, and the rest goes back; beyond
        it, as much as the key's quota and the account's balance still cover (`charge`), the rest
        counted as unbilled."""
        ...

    async def release(
        self,
        call_id: str,
        error_code: str,
        *,
        status: ReleaseStatus = "failed",
        facts: UsageFacts | None = None,
    ) -> None:
        """Close the call billing nothing: everything held goes back."""
        ...

    async def renew(self, call_id: str) -> bool:
        """Extend the lease of a call still open; False when it is closed already."""
        ...

    async def release_abandoned(self, limit: int = 500) -> int:
        """Release up to `limit` holds whose lease has passed; return how many this call released."""
        ...
