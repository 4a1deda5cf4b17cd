"""The sweeper of abandoned holds: every replica runs one, with no leader.

A hold's lease covers its call while the call lives (a live stream renews it), so a lease that has
passed belongs to a call whose replica died. Releasing is a close, and the first close of a call
wins: two replicas sweeping at once release each hold once.
"""

from __future__ import annotations

import asyncio
import logging

from server.domain.holds import Billing

logger = logging.getLogger(__name__)


async def sweep_once(billing: Billing) -> int:
    """Release every hold whose lease has passed, a batch at a time; return how many this did."""
    total = 0
    while released := await billing.release_abandoned():
        total += released
    if total:
        logger.warning("released %d abandoned holds", total, extra={"released": total})
    return total


async def sweep_forever(billing: Billing, every_seconds: float) -> None:
    """Forever: sweep, then wait `every_seconds`. Cancel to stop."""
    while True:
        try:
            await sweep_once(billing)
        except Exception as error:
            logger.warning("hold sweep failed: %s", type(error).__name__)
        await asyncio.sleep(every_seconds)
