"""Taking a claimed x402 payment to an outcome that is known, and only on evidence.

A payment is `pending` (claimed, being verified) → `settling` (the facilitator was asked to settle) →
`settled` (credited once, with its transaction hash) | `failed` (a clear no: nothing moved) |
`expired` (never used by its `validBefore`), plus `unknown`: a settle whose answer was not seen (a
timeout, a reset, a 5xx after sending, a cancellation, a crash). `unknown` is never taken for
`failed`: the payer's USDC may have moved. It is closed by evidence only: the chain's (when
`X402_RPC_URL` is set), a later clear answer of the facilitator, or an operator.

Whoever works on a payment owns it for a lease; a request that dies leaves the lease to run out, and
the reconciler (on every replica) takes it from there. Every move is a conditional update, so a
payment is credited once however many requests and replicas race on it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from server.db.repositories.payments import PaymentRepository, PaymentRow
from server.domain.errors import ServiceUnavailable, UpstreamFailed
from server.domain.payments.chain import Authorization, ChainClient, ChainUnavailable, Evidence
from server.domain.payments.facilitator import FacilitatorClient, FacilitatorUnavailable
from server.observability import PAYMENTS

logger = logging.getLogger(__name__)

#: How many open payments one reconciling pass takes.
RECONCILE_BATCH = 20
#: How long a settle waits to learn the chain's height (where to look for it later).
BLOCK_NUMBER_SECONDS = 2.0


class NotPaid(Exception):
    """The payment is known not to have paid us (it needs a new one); `reason` is an AIP-193 code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class SettlementPolicy:
    """Timings, from the settings."""

    facilitator_timeout_seconds: float
    #: After `validBefore`, how long before "not used" counts as proof (clocks differ).
    expiry_margin_seconds: int
    #: How often the reconciler runs; also what `retry-after` tells a client.
    reconcile_seconds: int

    @property
    def request_lease(self) -> timedelta:
        """How long a request owns a payment it verifies or settles (its answer comes before)."""
        return timedelta(seconds=self.facilitator_timeout_seconds + 5)

    @property
    def work_lease(self) -> timedelta:
        """How long a reconciler owns the payments it looks up on chain."""
        return timedelta(seconds=30)

    @property
    def retry_after(self) -> int:
        return max(1, self.reconcile_seconds or 5)


def pending(row: PaymentRow, policy: SettlementPolicy, message: str) -> ServiceUnavailable:
    """What a client sees while the outcome is not known: 503 with `retry-after`, never a 402 (which
    would invite the payer to sign a second payment)."""
    text = f"{message} Nothing has been credited yet; retry the same payment header (do not sign a new one)."
    return ServiceUnavailable(
        text,
        reason="PAYMENT_PENDING",
        headers={"retry-after": str(policy.retry_after)},
        body={
            "ok": False,
            "error": {"code": "PAYMENT_PENDING", "message": text},
            "payment": {"id": row.id, "status": row.status},
        },
    )


def authorization(row: PaymentRow) -> Authorization:
    return Authorization(
        asset=row.asset,
        payer=row.payer,
        nonce=row.nonce,
        pay_to=row.pay_to,
        amount=row.amount_atomic,
        from_block=row.from_block,
    )


class Settlements:
    """Verify, settle, and close unknown outcomes: for requests and for the reconciler."""

    def __init__(
        self,
        payments: PaymentRepository,
        facilitator: FacilitatorClient,
        chain: ChainClient | None,
        policy: SettlementPolicy,
    ) -> None:
        self._payments = payments
        self._facilitator = facilitator
        self._chain = chain
        self._policy = policy
        self._tasks: set[asyncio.Task[PaymentRow]] = set()

    @property
    def policy(self) -> SettlementPolicy:
        return self._policy

    async def current(self, payment_id: str) -> PaymentRow:
        row = await self._payments.get(payment_id)
        assert row is not None
        return row

    async def settle_claimed(
        self, row: PaymentRow, payload: dict[str, Any], requirements: dict[str, Any]
    ) -> PaymentRow:
        """`row` is `pending` and ours: have the facilitator verify, then settle it. Returns the
        settled payment; raises what the client should see otherwise."""
        try:
            valid, why = await self._facilitator.verify(row.version, payload, requirements)
        except FacilitatorUnavailable as error:
            # Verifying moves nothing: the payment may simply be tried again.
            await self._payments.move(
                row.id,
                ["pending"],
                "failed",
                actor="request",
                detail=f"verify: facilitator unavailable ({error})",
            )
            logger.warning("x402 facilitator unavailable: %s", error)
            raise ServiceUnavailable(
                "the payment facilitator is unavailable; nothing was credited: retry the same payment",
                reason="FACILITATOR_UNAVAILABLE",
            ) from None
        if not valid:
            await self._payments.move(row.id, ["pending"], "failed", actor="request", detail=f"verify: {why}")
            raise NotPaid("FACILITATOR_REJECTED", f"the facilitator rejected the payment: {why}")
        settling = await self._payments.move(
            row.id,
            ["pending"],
            "settling",
            actor="request",
            lease=self._policy.request_lease,
            from_block=await self._block_number(),
        )
        if settling is None:
            raise pending(
                await self.current(row.id), self._policy, "This payment is being settled elsewhere."
            )
        return await self._detached(self._settle(settling, payload, requirements, again=False))

    async def resolve(
        self, row: PaymentRow, payload: dict[str, Any], requirements: dict[str, Any], window_open: bool
    ) -> PaymentRow:
        """A client retried an `unknown` payment: close it from the chain if it can be, else send the
        same settle again while the authorisation is valid (EIP-3009 nonces are single use, so a second
        settle can never move money twice)."""
        owned = await self._payments.move(
            row.id, ["unknown"], "unknown", actor="request", lease=self._policy.work_lease, only_unleased=True
        )
        if owned is None:
            raise pending(
                await self.current(row.id), self._policy, "This payment's outcome is being established."
            )
        closed = await self._from_chain(owned, actor="request")
        if closed is not None:
            return closed
        if window_open:
            settling = await self._payments.move(
                owned.id,
                ["unknown"],
                "settling",
                actor="request",
                detail="settle sent again on a retry",
                lease=self._policy.request_lease,
            )
            if settling is not None:
                return await self._detached(self._settle(settling, payload, requirements, again=True))
        released = await self._payments.move(owned.id, ["unknown"], "unknown", actor="request")
        raise pending(released or owned, self._policy, "This payment's outcome is not known yet.")

    async def reconcile_once(self) -> int:
        """Take the open payments nobody owns and close what evidence allows; how many were closed."""
        rows = await self._payments.take_for_reconciling(
            RECONCILE_BATCH, self._policy.work_lease, include_unknown=self._chain is not None
        )
        closed = 0
        for row in rows:
            try:
                closed += await self._reconcile(row)
            except Exception as error:  # one bad payment must not stop the others
                logger.warning("reconciling payment %s failed: %s", row.id, type(error).__name__)
        return closed

    async def _reconcile(self, row: PaymentRow) -> int:
        if row.status == "pending":
            # A payment is marked `settling` before the facilitator is asked to settle it.
            await self._payments.move(
                row.id,
                ["pending"],
                "failed",
                actor="reconciler",
                detail="its request ended before a settle was sent: nothing moved; it may be retried",
            )
            return 1
        if row.status == "settling":
            moved = await self._payments.move(
                row.id,
                ["settling"],
                "unknown",
                actor="reconciler",
                detail="its request ended before the settle's answer was recorded",
                lease=self._policy.work_lease,
            )
            if moved is None:
                return 0
            row = moved
            PAYMENTS.labels("unknown").inc()
        closed = await self._from_chain(row, actor="reconciler")
        if closed is not None:
            return 1
        # Not yet: give it back; the next round (or a client's retry) looks again.
        await self._payments.move(row.id, ["unknown"], "unknown", actor="reconciler")
        return 0

    async def _settle(
        self, row: PaymentRow, payload: dict[str, Any], requirements: dict[str, Any], *, again: bool
    ) -> PaymentRow:
        """`row` is `settling` and ours: ask the facilitator, and record exactly what became known."""
        try:
            async with asyncio.timeout(self._policy.facilitator_timeout_seconds):
                settlement = await self._facilitator.settle(row.version, payload, requirements)
        except FacilitatorUnavailable as error:
            if not error.sent and not again:
                await self._payments.move(
                    row.id, ["settling"], "failed", actor="request", detail=f"settle not sent: {error}"
                )
                raise ServiceUnavailable(
                    "the payment facilitator is unavailable; nothing was credited: retry the same payment",
                    reason="FACILITATOR_UNAVAILABLE",
                ) from None
            raise await self._unknown(row, f"settle unanswered: {error}") from None
        except TimeoutError:
            raise await self._unknown(row, "settle unanswered: timed out") from None
        except asyncio.CancelledError:
            await self._unknown(row, "settle cancelled")
            raise
        if settlement.success and settlement.transaction:
            return await self._credit(row, settlement.transaction, actor="request", resolved_by="facilitator")
        evidence = await self._evidence(row)
        if evidence is not None and evidence.paid:
            return await self._credit(row, evidence.paid_tx, actor="request", resolved_by="chain")
        if evidence is not None and evidence.used:
            await self._spent_elsewhere(row, evidence, actor="request")
        if again:
            # It was unknown: a refusal now proves nothing (the first settle may have landed).
            raise await self._unknown(row, f"retried settle refused: {settlement.reason or 'no transaction'}")
        await self._payments.move(
            row.id,
            ["settling"],
            "failed",
            actor="request",
            detail=f"settle refused: {settlement.reason}",
            resolved_by="facilitator",
        )
        PAYMENTS.labels("failed").inc()
        raise UpstreamFailed(
            f"the facilitator could not settle the payment: {settlement.reason or 'no transaction'}; "
            "nothing was credited",
            reason="SETTLEMENT_FAILED",
        )

    async def _unknown(self, row: PaymentRow, detail: str) -> ServiceUnavailable:
        """Record that the settle's outcome was not seen; the error the client gets meanwhile."""
        logger.warning("x402 payment %s: outcome unknown (%s)", row.id, detail)
        moved = await asyncio.shield(
            self._payments.move(row.id, ["settling"], "unknown", actor="request", detail=detail)
        )
        PAYMENTS.labels("unknown").inc()
        return pending(moved or row, self._policy, "The payment's outcome is not known yet.")

    async def _credit(self, row: PaymentRow, tx_hash: str, *, actor: str, resolved_by: str) -> PaymentRow:
        settled = await self._payments.settle(
            row.id, tx_hash, ["settling", "unknown"], actor=actor, resolved_by=resolved_by
        )
        if settled is None:
            return await self.current(row.id)  # someone else closed it first: theirs is the answer
        PAYMENTS.labels("settled").inc()
        logger.info("x402 payment %s settled by %s: %s", row.id, resolved_by, tx_hash)
        return settled

    async def _spent_elsewhere(self, row: PaymentRow, evidence: Evidence, *, actor: str) -> None:
        where = f" in {evidence.other_tx}" if evidence.other_tx else ""
        detail = f"the chain shows the authorisation used{where} without a transfer to payTo"
        await self._payments.move(
            row.id, ["settling", "unknown"], "failed", actor=actor, detail=detail, resolved_by="chain"
        )
        PAYMENTS.labels("failed").inc()
        raise NotPaid(
            "PAYMENT_NOT_RECEIVED", f"this authorisation was spent without paying this gateway: {detail}"
        )

    async def _from_chain(self, row: PaymentRow, *, actor: str) -> PaymentRow | None:
        """Close an `unknown` payment we own from the chain's evidence; None when it cannot be yet."""
        evidence = await self._evidence(row)
        if evidence is None:
            return None
        if evidence.paid:
            return await self._credit(row, evidence.paid_tx, actor=actor, resolved_by="chain")
        if evidence.used:
            try:
                await self._spent_elsewhere(row, evidence, actor=actor)
            except NotPaid:
                if actor == "reconciler":
                    return await self.current(row.id)
                raise
        if row.valid_before and time.time() > row.valid_before + self._policy.expiry_margin_seconds:
            expired = await self._payments.move(
                row.id,
                ["unknown"],
                "expired",
                actor=actor,
                detail="no transfer by validBefore: the authorisation can never be used now",
                resolved_by="chain",
            )
            PAYMENTS.labels("expired").inc()
            return expired or await self.current(row.id)
        return None

    async def _evidence(self, row: PaymentRow) -> Evidence | None:
        if self._chain is None:
            return None
        try:
            return await self._chain.evidence(authorization(row))
        except ChainUnavailable as error:
            logger.warning("x402 payment %s: no evidence from the chain (%s)", row.id, error)
            return None

    async def _block_number(self) -> int | None:
        """Where to start looking for the payment on chain (best effort, and quick: the settle waits)."""
        if self._chain is None:
            return None
        try:
            async with asyncio.timeout(BLOCK_NUMBER_SECONDS):
                return await self._chain.block_number()
        except (ChainUnavailable, TimeoutError):
            return None

    async def _detached(self, work: Coroutine[Any, Any, PaymentRow]) -> PaymentRow:
        """Run `work` to its end even if the client hangs up: its outcome must be recorded."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return await asyncio.shield(task)

    def _finished(self, task: asyncio.Task[PaymentRow]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a client that hung up no longer waits for it
