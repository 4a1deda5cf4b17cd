"""Money steps a cancellation cannot cut in half.

A caller that goes away (a client disconnecting cancels its gRPC handler) must not interrupt a hold,
a settlement or a release in the middle: the step runs to its end in a task of its own, kept
referenced until it ends (the event loop keeps only weak references to tasks), while the caller
sees its cancellation at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

_RUNNING: set[asyncio.Future[Any]] = set()


def detached(step: Awaitable[T]) -> asyncio.Future[T]:
    """`step` running as its own task, referenced until it ends, whoever awaits it."""
    task = asyncio.ensure_future(step)
    _RUNNING.add(task)
    task.add_done_callback(_RUNNING.discard)
    return task


async def shielded(step: Awaitable[T]) -> T:
    """Await `step` so that cancelling the caller does not interrupt it: it runs to its end regardless."""
    task = detached(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_report_unseen_failure)  # nobody is left to see how it ends
        raise


def _report_unseen_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("a money step failed after its caller had gone", exc_info=task.exception())
