"""PostgreSQL LISTEN/NOTIFY for key deactivations, so every replica's key cache hears them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg

from server.db.urls import DatabaseUrls, libpq_url

logger = logging.getLogger(__name__)

KEY_REVOKED_CHANNEL = "crosscompute_key_revoked"
RECONNECT_SECONDS = 1.0


async def listen_for_revoked_keys(
    urls: DatabaseUrls, on_revoked: Callable[[str], None], on_state: Callable[[bool], None]
) -> None:
    """Forever: listen for revoked key digests; report connection state changes. Cancel to stop."""
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                libpq_url(urls), autocommit=True, connect_timeout=3
            ) as connection:
                await connection.execute(f"LISTEN {KEY_REVOKED_CHANNEL}")
                on_state(True)
                async for notification in connection.notifies():
                    on_revoked(notification.payload)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            logger.warning("key revocation listener disconnected: %s", type(error).__name__)
        on_state(False)
        await asyncio.sleep(RECONNECT_SECONDS)
