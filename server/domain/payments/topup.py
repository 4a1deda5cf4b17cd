"""Top-ups: answer 402 with a challenge, or check the payment, claim its authorisation, have the
facilitator verify and settle it, and credit the account once with the transaction hash. A payment
seen before (in either x402 version) is answered by its state, never settled or credited twice."""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from server.db.repositories.payments import NewPayment, PaymentRepository, PaymentRow
from server.domain.errors import Conflict, InvalidArgument, PaymentRequired, ServiceUnavailable
from server.domain.key_auth import KeyPrincipal
from server.domain.payments.check import (
    PaymentRejected,
    Presented,
    check,
    check_terms,
    check_window,
    decode,
)
from server.domain.payments.offer import Offer, challenge
from server.domain.payments.settlement import NotPaid, Settlements, pending

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopUpPolicy:
    """How top-ups are offered (from the settings)."""

    enabled: bool
    network: str
    asset: str
    pay_to: str
    token_name: str
    token_version: str
    default_usd: Decimal
    min_usd: Decimal
    max_usd: Decimal
    credits_per_usd: Decimal
    resource: str


@dataclass(frozen=True)
class TopUpResult:
    """A settled top-up (new, or the original one of a replayed payment) and the header to answer with."""

    payment: PaymentRow
    version: int
    response_header: tuple[str, str]


def _header(presented: Presented, payment: PaymentRow) -> tuple[str, str]:
    """The receipt header, in the version (and network naming) the payment came in."""
    version = presented.version
    receipt = {
        "success": True,
        "transaction": payment.tx_hash,
        "network": presented.network,
        "payer": payment.payer,
    }
    value = base64.b64encode(json.dumps(receipt, separators=(",", ":")).encode()).decode()
    return ("x-payment-response" if version == 1 else "payment-response", value)


class TopUps:
    """The operations behind `POST /api/agents/topup`."""

    #: Races on one payment are settled by conditional updates; this bounds re-reading after losing one.
    MAX_ROUNDS = 4

    def __init__(
        self, policy: TopUpPolicy, payments: PaymentRepository, settlements: Settlements | None
    ) -> None:
        self._policy = policy
        self._payments = payments
        self._settlements = settlements

    def offer(self, amount_usd: str) -> Offer:
        """What a top-up of `amount_usd` (default when empty) must pay; 400 when out of range."""
        policy = self._policy
        try:
            amount = Decimal(amount_usd) if amount_usd else policy.default_usd
        except InvalidOperation:
            raise InvalidArgument(
                'amountUsd must be a decimal string such as "5.00"', param="amountUsd"
            ) from None
        if not amount.is_finite() or amount != amount.quantize(Decimal("0.000001")):
            raise InvalidArgument("amountUsd must have at most 6 decimal places", param="amountUsd")
        if not policy.min_usd <= amount <= policy.max_usd:
            raise InvalidArgument(
                f"amountUsd must be between {policy.min_usd} and {policy.max_usd}", param="amountUsd"
            )
        return Offer(
            network=policy.network,
            asset=policy.asset,
            pay_to=policy.pay_to,
            amount_usd=amount,
            resource=policy.resource,
            token_name=policy.token_name,
            token_version=policy.token_version,
        )

    def _required(self, offer: Offer, error: str, reason: str) -> PaymentRequired:
        body, header = challenge(offer, error)
        return PaymentRequired(error, reason=reason, body=body, headers={"payment-required": header})

    async def top_up(
        self, principal: KeyPrincipal, amount_usd: str, header_name: str | None, header_value: str | None
    ) -> TopUpResult:
        settlements = self._settlements
        if not self._policy.enabled or settlements is None:
            raise ServiceUnavailable("x402 top-ups are not enabled on this gateway", reason="X402_DISABLED")
        offer = self.offer(amount_usd)
        if header_name is None or not header_value:
            raise self._required(offer, "payment required: pay with x402 to buy credits", "PAYMENT_REQUIRED")
        presented = decode(header_value, header_name)
        requirements = offer.v1_requirements() if presented.version == 1 else offer.v2_requirements()
        try:
            payment = await self._pay(settlements, principal, offer, presented, requirements)
        except PaymentRejected as rejected:
            raise self._required(offer, f"{rejected.reason}: {rejected.message}", rejected.reason) from None
        except NotPaid as refused:
            raise self._required(offer, f"{refused.reason}: {refused.message}", refused.reason) from None
        return TopUpResult(payment, presented.version, _header(presented, payment))

    async def _pay(
        self,
        settlements: Settlements,
        principal: KeyPrincipal,
        offer: Offer,
        presented: Presented,
        requirements: dict[str, object],
    ) -> PaymentRow:
        identity = (offer.chain_id, offer.asset, presented.payer, presented.nonce)
        existing = await self._payments.find(*identity)
        if existing is None:
            check(presented, offer)
            claimed = await self._payments.claim(
                NewPayment(
                    account_id=principal.account_id,
                    key_id=principal.key_id,
                    version=presented.version,
                    network=presented.network,
                    chain_id=offer.chain_id,
                    asset=offer.asset,
                    payer=presented.payer,
                    pay_to=offer.pay_to,
                    nonce=presented.nonce,
                    valid_before=presented.valid_before,
                    amount_atomic=offer.amount_atomic,
                    amount_usd_micro=int(offer.amount_usd * 1_000_000),
                    credits_micro=int(offer.amount_usd * self._policy.credits_per_usd * 1_000_000),
                ),
                settlements.policy.request_lease,
            )
            if claimed is not None:
                return await settlements.settle_claimed(claimed, presented.payload, requirements)
        else:
            check_terms(presented, offer)
        return await self._again(settlements, principal, presented, requirements, identity)

    async def _again(
        self,
        settlements: Settlements,
        principal: KeyPrincipal,
        presented: Presented,
        requirements: dict[str, object],
        identity: tuple[int, str, str, str],
    ) -> PaymentRow:
        """A payment seen before: answer by its state, taking it over where its owner is gone."""
        policy, lease = settlements.policy, settlements.policy.request_lease
        for _round in range(self.MAX_ROUNDS):
            row = await self._payments.find(*identity)
            assert row is not None
            if row.account_id != principal.account_id:
                raise Conflict(
                    "this payment was already used by another account", reason="PAYMENT_ALREADY_USED"
                )
            if row.status == "settled":
                return row  # a replay: the original top-up, credited once, and nothing more
            if row.status == "expired":
                raise NotPaid(
                    "PAYMENT_EXPIRED",
                    "the authorisation expired without being used; nothing was credited: sign a new payment",
                )
            if row.status == "failed" and row.resolved_by in {"chain", "operator"}:
                raise NotPaid(
                    "PAYMENT_NOT_RECEIVED", f"this payment did not reach this gateway: {row.error_reason}"
                )
            if row.leased(datetime.now(UTC)):
                raise pending(row, policy, "This payment is being settled by another request.")
            if row.status in ("failed", "pending"):
                check_window(presented)
                taken = await self._payments.move(
                    row.id,
                    [row.status],
                    "pending",
                    actor="request",
                    detail="tried again"
                    if row.status == "failed"
                    else "taken over from a request that ended",
                    lease=lease,
                    only_unleased=True,
                )
                if taken is not None:
                    return await settlements.settle_claimed(taken, presented.payload, requirements)
                continue
            if row.status == "settling":
                await self._payments.move(
                    row.id,
                    ["settling"],
                    "unknown",
                    actor="request",
                    detail="its request ended before the settle's answer was recorded",
                    only_unleased=True,
                )
                continue
            window_open = presented.valid_before > time.time()
            return await settlements.resolve(row, presented.payload, requirements, window_open)
        latest = await self._payments.find(*identity)
        assert latest is not None
        raise pending(latest, policy, "This payment is being settled by another request.")
