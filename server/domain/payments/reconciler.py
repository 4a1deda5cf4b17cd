"""The reconciler: on every replica, no leader, it closes x402 payments whose outcome is unknown.

Each pass takes the open payments nobody owns (on PostgreSQL `FOR UPDATE SKIP LOCKED`, so replicas
share the work without picking the same one), resolves them from the chain's evidence, and leaves
the rest for the next pass. A crash between the facilitator's success and the credit is resolved the
same way, once the dead request's lease has run out.
"""

from __future__ import annotations

import asyncio
import logging

from server.domain.payments.settlement import Settlements

logger = logging.getLogger(__name__)


async def reconcile_forever(settlements: Settlements, every_seconds: float) -> None:
    """Forever: one pass, then wait. Cancel to stop."""
    while True:
        try:
            closed = await settlements.reconcile_once()
            if closed:
                logger.info("reconciled %d x402 payments", closed)
        except Exception as error:
            logger.warning("x402 reconciliation failed: %s", type(error).__name__)
        await asyncio.sleep(every_seconds)
