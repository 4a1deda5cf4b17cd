"""Key lookups are cached, and a deactivation reaches every replica's cache."""

from __future__ import annotations

import httpx
import pytest

from server.domain.key_cache import KeyCache
from tests.conftest import gateway_settings
from tests.support.databases import postgres_database
from tests.support.gateway import running_gateway
from tests.support.people import sign_in
from tests.support.supabase import SupabaseStandIn
from tests.support.waiting import eventually


def test_the_cache_forgets_on_deactivation_and_is_bypassed_while_deaf() -> None:
    cache: KeyCache[str] = KeyCache(60, needs_listener=True)
    cache.put("digest", "row")
    assert cache.get("digest") is None, "not trusted before the listener connects"
    cache.listening(True)
    cache.put("digest", "row")
    assert cache.get("digest") == "row"
    cache.forget("digest")
    assert cache.get("digest") is None
    cache.put("digest", "row")
    cache.listening(False)
    assert cache.get("digest") is None, "a lost listener drops and bypasses the cache"
    cache.put("digest", "row")
    assert cache.get("digest") is None


def test_an_unshared_cache_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("server.domain.key_cache.time.monotonic", lambda: clock[0])
    cache: KeyCache[str] = KeyCache(30, needs_listener=False)
    cache.put("digest", "row")
    clock[0] += 29
    assert cache.get("digest") == "row"
    clock[0] += 2
    assert cache.get("digest") is None


@pytest.mark.postgres
def test_a_deactivation_on_one_replica_reaches_the_others(supabase: SupabaseStandIn) -> None:
    with postgres_database("replicas") as (_name, url):
        settings = gateway_settings(url, supabase, CROSSCOMPUTE_KEY_CACHE_SECONDS="300")
        with (
            running_gateway(settings) as first,
            running_gateway(settings) as second,
            httpx.Client(base_url=first.base_url, timeout=10) as client,
        ):
            person = sign_in(first, supabase, client)
            boot = person.bootstrap()
            headers = {"authorization": f"Bearer {boot['apiKey']}"}
            models = f"{second.base_url}/v1/models"
            cache = second.server.runtime.key_cache if second.server.runtime else None
            assert cache is not None
            eventually(lambda: cache.trusted, what="the second replica's revocation listener")
            assert httpx.get(models, headers=headers).status_code == 200
            assert len(cache) == 1, "the second replica now answers this key from its cache"

            deactivated = person.post(f"/api/keys/{boot['key']['id']}/deactivate")
            assert deactivated.status_code == 200
            assert httpx.get(f"{first.base_url}/v1/models", headers=headers).status_code == 401
            # Far sooner than the 300 s the entry would live: the notification evicted it.
            eventually(
                lambda: httpx.get(models, headers=headers).status_code == 401,
                timeout=5,
                what="the second replica to refuse the deactivated key",
            )
