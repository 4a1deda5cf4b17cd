"""Scale-out: three server replicas behind one Envoy on one PostgreSQL. Under 500 concurrent requests
against a key quota for 100 answers, at most 100 are billed; killing a replica mid-load bills nothing
twice, and Envoy routes around it."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from scripts.replicas import running
from tests.conftest import ADMIN_TOKEN
from tests.support.databases import postgres_database
from tests.support.db import query
from tests.support.fake_provider import COMPLETION_TOKENS, PROMPT_TOKENS, FakeProvider
from tests.support.supabase import JWT_SECRET, SupabaseStandIn

ANSWER_MICRO = PROMPT_TOKENS * 250 + COMPLETION_TOKENS * 2000  # gpt-5-mini at 1000 credits per USD
REQUESTS = 500
ANSWERS_COVERED = 100


@pytest.mark.postgres
def test_three_replicas_bill_at_most_the_quota_and_survive_a_crash(
    supabase: SupabaseStandIn, fake: FakeProvider
) -> None:
    with postgres_database("replicas") as (_name, url):
        environ = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("CROSSCOMPUTE_", "DATABASE_URL", "OPENAI"))
            },
            "DATABASE_URL": url,
            "SUPABASE_URL": supabase.url,
            "SUPABASE_JWT_SECRET": JWT_SECRET,
            "CROSSCOMPUTE_ADMIN_TOKEN": ADMIN_TOKEN,
            "OPENAI_API_KEY": "sk-fake",
            "OPENAI_BASE_URL": f"{fake.url}/v1",
            "CROSSCOMPUTE_LOG_LEVEL": "WARNING",
        }
        with running(3, environ) as replicas, httpx.Client(timeout=60) as http:
            assert replicas.edge is not None
            base = f"http://127.0.0.1:{replicas.edge.http}"
            token = supabase.hs256(supabase.claims())
            signed_in = {"authorization": f"Bearer {token}"}
            assert http.post(f"{base}/api/bootstrap-account", json={}, headers=signed_in).status_code == 200
            created = http.post(
                f"{base}/api/keys",
                json={"label": "load", "quotaCredits": ANSWERS_COVERED * ANSWER_MICRO / 1_000_000},
                headers=signed_in,
            ).json()
            key = {"authorization": f"Bearer {created['apiKey']}"}
            body = {
                "model": "openai/gpt-5-mini",
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": COMPLETION_TOKENS,
            }
            started = threading.Event()
            sent = [0]
            lock = threading.Lock()

            def call(_: int) -> int:
                with lock:
                    sent[0] += 1
                    if sent[0] == REQUESTS // 4:
                        started.set()
                try:
                    return http.post(f"{base}/v1/chat/completions", json=body, headers=key).status_code
                except httpx.TransportError:
                    return 599

            with ThreadPoolExecutor(48) as pool:
                futures = [pool.submit(call, n) for n in range(REQUESTS)]
                started.wait(60)
                replicas.kill(1)  # a crash mid-load
                statuses = [future.result() for future in futures]

            answered = statuses.count(200)
            assert 1 <= answered <= ANSWERS_COVERED
            assert set(statuses) <= {200, 402, 502, 503, 599}, sorted(set(statuses))
            # Envoy routes around the dead replica: everything after it answers.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                after = [http.get(f"{base}/v1/models", headers=key).status_code for _ in range(12)]
                if set(after) == {200}:
                    break
            assert set(after) == {200}

            settings_rows = query_rows(url)
            settled, records, key_row, balance, ledger = settings_rows(created["key"]["id"])
            # Every answer is billed once; a call the crash cut after it was billed is the only other kind.
            cut = sum(statuses.count(status) for status in (502, 503, 599))
            assert answered <= settled["calls"] <= answered + cut
            assert int(settled["billed"]) <= key_row["quota_micro"]
            assert records <= REQUESTS
            assert balance == ledger >= 0
            # The killed replica's holds stay open until the stale-reservation sweep gives them back:
            # what the key and its account have used is what was billed plus those holds, exactly.
            books = books_of(url, created["key"]["id"])
            assert books["key_used"] == books["key_billed"] + books["key_held"], "the key's quota"
            assert books["key_billed"] == int(settled["billed"])
            assert books["account_used"] == books["account_billed"] + books["account_held"]
            assert books["account_used"] == books["ledger_used"], "used = the ledger's debits less refunds"
            assert balance == books["granted"] + books["purchased"] - books["account_used"]


def query_rows(url: str):  # type: ignore[no-untyped-def]
    from server.settings import Settings

    settings = Settings.from_env({"DATABASE_URL": url})

    def rows(key_id: str):  # type: ignore[no-untyped-def]
        settled = query(
            settings,
            "SELECT COUNT(*) AS calls, COALESCE(SUM(billed_micro), 0) AS billed FROM usage_records "
            "WHERE key_id = :id AND status = 'settled'",
            id=key_id,
        )[0]
        records = query(settings, "SELECT COUNT(*) AS n FROM usage_records WHERE key_id = :id", id=key_id)[0][
            "n"
        ]
        key_row = query(
            settings, "SELECT quota_micro, used_micro, account_id FROM api_keys WHERE id = :id", id=key_id
        )[0]
        balance = query(
            settings, "SELECT balance_micro FROM accounts WHERE id = :id", id=key_row["account_id"]
        )[0]
        ledger = query(
            settings,
            "SELECT COALESCE(SUM(amount_micro), 0) AS total FROM ledger_entries WHERE account_id = :id",
            id=key_row["account_id"],
        )[0]
        return settled, records, key_row, int(balance["balance_micro"]), int(ledger["total"])

    return rows


def books_of(url: str, key_id: str) -> dict[str, int]:
    """The key's and its account's used totals beside their bills, open holds and ledger use, read in
    one statement (one snapshot)."""
    from server.settings import Settings

    settings = Settings.from_env({"DATABASE_URL": url})
    (row,) = query(
        settings,
        "SELECT k.used_micro AS key_used, a.used_micro AS account_used, a.granted_micro AS granted, "
        "a.purchased_micro AS purchased, "
        "(SELECT COALESCE(SUM(u.billed_micro), 0) FROM usage_records u "
        " WHERE u.key_id = k.id AND u.status = 'settled') AS key_billed, "
        "(SELECT COALESCE(SUM(u.reserved_micro), 0) FROM usage_records u "
        " WHERE u.key_id = k.id AND u.status = 'reserved') AS key_held, "
        "(SELECT COALESCE(SUM(u.billed_micro), 0) FROM usage_records u "
        " WHERE u.account_id = a.id AND u.status = 'settled') AS account_billed, "
        "(SELECT COALESCE(SUM(u.reserved_micro), 0) FROM usage_records u "
        " WHERE u.account_id = a.id AND u.status = 'reserved') AS account_held, "
        "(SELECT -COALESCE(SUM(l.amount_micro), 0) FROM ledger_entries l "
        " WHERE l.account_id = a.id AND l.kind IN ('debit', 'refund')) AS ledger_used "
        "FROM api_keys k JOIN accounts a ON a.id = k.account_id WHERE k.id = :id",
        id=key_id,
    )
    return {name: int(value) for name, value in row.items()}
