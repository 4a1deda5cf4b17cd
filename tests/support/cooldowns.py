"""Putting a gateway's models back to work between test cases: no cool-down rows for them, and no
resting set cached by the in-process server that would still hide them for up to a second."""

from __future__ import annotations

import gc

from server.db.repositories.cooldowns import CooldownRepository
from tests.support.db import execute
from tests.support.gateway import Gateway


def cooldown_repositories(gateway: Gateway) -> list[CooldownRepository]:
    """The cool-down repositories of this gateway's in-process server (found by the engine their
    sessions are bound to: the runtime does not keep a reference of its own)."""
    runtime = gateway.server.runtime
    assert runtime is not None, "the gateway's server is running"
    found = [
        item
        for item in gc.get_objects()
        if isinstance(item, CooldownRepository) and item._sessions.kw.get("bind") is runtime.engine
    ]
    assert found, "the gateway's server routes through a cool-down repository"
    return found


def forget_cooldowns(gateway: Gateway, *model_ids: str) -> None:
    """Delete the cool-downs of `model_ids` and drop the server's cached resting set, so the next
    request routes as if those models had never failed."""
    execute(
        gateway.settings,
        [("DELETE FROM model_cooldowns WHERE model_id = :model_id", {"model_id": m}) for m in model_ids],
    )
    repositories = cooldown_repositories(gateway)

    async def forget() -> None:
        for repository in repositories:
            repository._cached = None

    gateway.server.run(forget())
