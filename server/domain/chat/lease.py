"""When a live call renews its hold's lease, and how long a lease must be.

A hold is leased when it is taken; the sweeper may release it once the lease has passed. A stream
renews it as it relays, cheaply: each chunk asks the process's monotonic clock whether more than half
of the lease has gone since it was last set (no database), and only then is one UPDATE sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

#: After a renewal that failed (the database hiccuped), the next chunk may try again this much later.
RETRY_SECONDS = 5.0
#: Slack above twice the longest silence, for database round trips and the sweeper's own clock.
MARGIN_SECONDS = 60


def shortest_safe_lease(upstream_timeout_seconds: int, attempts: int, stream_idle_seconds: int) -> int:
    """The shortest lease no live call can outlive between two chances to renew it.

    Before its first chunk a call waits at most `attempts` upstream timeouts; between two chunks a
    stream is silent at most an upstream timeout (the provider) or Envoy's stream idle timeout (a
    client not reading). A renewal comes at the first chunk after half the lease, so half the lease
    must cover the longest of these silences.
    """
    silence = max(upstream_timeout_seconds * attempts, stream_idle_seconds)
    return 2 * silence + MARGIN_SECONDS


def warn_if_short(lease_seconds: int, safe_seconds: int) -> None:
    """Say so at start when the configured lease could run out under a live call."""
    if lease_seconds < safe_seconds:
        logger.warning(
            "CROSSCOMPUTE_HOLD_LEASE_SECONDS=%d is shorter than the %d s these timeouts need: a live "
            "stream's hold could be swept and the stream billed nothing",
            lease_seconds,
            safe_seconds,
        )


class LeaseRenewal:
    """The renewal schedule of one call's lease, on a monotonic clock.

    Create it just before the hold is taken: the lease the database sets starts no earlier, so the
    schedule renews early rather than late.
    """

    def __init__(self, lease_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._half = lease_seconds / 2
        self._clock = clock
        self._next = clock() + self._half

    def due(self) -> bool:
        """Whether more than half the lease has passed since it was last set."""
        return self._clock() >= self._next

    def renewing(self) -> None:
        """The lease is being set again now (call it before the UPDATE: the lease that sets ends later)."""
        self._next = self._clock() + self._half

    def failed(self) -> None:
        """A renewal failed: try again soon, not at every chunk."""
        self._next = self._clock() + min(RETRY_SECONDS, self._half / 2)
