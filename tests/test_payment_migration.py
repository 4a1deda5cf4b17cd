"""Migration 0004 on a database that lived under the old rules, on SQLite and PostgreSQL: payments get
their chain id, one authorisation recorded twice (v2 and re-wrapped v1) keeps one row with the
identity and marks the other for review, and outcomes the old code never saw become `unknown`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from server.db.migrate import upgrade
from server.db.urls import DatabaseUrls, resolve
from tests.support.databases import postgres_database

USDC = "0x036cbd53842c5426634e7929541ec2318f3dcf7e"
PAYER = "0x2222222222222222222222222222222222222222"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def old_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DatabaseUrls]:
    """A database migrated only to 0003, the schema before payments had one identity."""
    if request.param == "sqlite":
        urls = resolve(f"sqlite:///{tmp_path / 'old.sqlite3'}", tmp_path / "unused.sqlite3")
        upgrade(urls, "0003")
        yield urls
        return
    with postgres_database("migration") as (_name, url):
        urls = resolve(url, tmp_path / "unused.sqlite3")
        upgrade(urls, "0003")
        yield urls


def test_0004_gives_one_identity_and_marks_what_the_old_rules_left(old_database: DatabaseUrls) -> None:
    engine = create_engine(old_database.render_sync())
    account = str(uuid.uuid4())
    start = datetime(2026, 11, 30, tzinfo=UTC)
    rows = {
        # One authorisation, first as v2 (settled), then re-wrapped as v1 (credited again).
        "v2": ("eip155:84532", "0xaa", "settled", "0xdeadbeef01", None),
        "v1 copy": ("base-sepolia", "0xaa", "settled", "0xdeadbeef02", None),
        "stuck": ("base-sepolia", "0xbb", "pending", None, None),
        "timed out": ("eip155:84532", "0xcc", "failed", None, "facilitator unavailable: ReadTimeout"),
        "refused": ("base", "0xdd", "failed", None, "verify: invalid_signature"),
    }
    ids = {name: str(uuid.uuid4()) for name in rows}
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO accounts (id, kind, external_id, balance_micro, granted_micro, purchased_micro,"
                " used_micro, created_at, updated_at) VALUES (:id, 'agent', :ext, 0, 0, 0, 0, :at, :at)"
            ),
            {"id": account, "ext": f"agent-{account}", "at": start},
        )
        for number, (name, (network, nonce, status, tx, reason)) in enumerate(rows.items()):
            connection.execute(
                text(
                    "INSERT INTO x402_payments (id, account_id, x402_version, network, asset, payer, pay_to,"
                    " nonce, amount_atomic, amount_usd_micro, credits_micro, status, tx_hash, error_reason,"
                    " created_at) VALUES (:id, :account, :version, :network, :asset, :payer, :payer,"
                    " :nonce, 1000000, 1000000, 1000000000, :status, :tx, :reason, :at)"
                ),
                {
                    "id": ids[name],
                    "account": account,
                    "version": 2 if network.startswith("eip155") else 1,
                    "network": network,
                    "asset": USDC,
                    "payer": PAYER,
                    "nonce": nonce,
                    "status": status,
                    "tx": tx,
                    "reason": reason,
                    "at": start + timedelta(minutes=number),
                },
            )

    upgrade(old_database)

    with engine.connect() as connection:
        after = {
            row.id: row
            for row in connection.execute(
                text("SELECT id, chain_id, status, error_reason, valid_before FROM x402_payments")
            )
        }
        events = connection.execute(
            text("SELECT payment_id, from_status, to_status, actor FROM x402_payment_events")
        ).all()
    engine.dispose()
    assert after[ids["v2"]].chain_id == 84532 and after[ids["v2"]].status == "settled"
    copy = after[ids["v1 copy"]]
    assert copy.chain_id is None, "the doubled row gives up the identity"
    assert copy.status == "settled" and "duplicate authorisation" in copy.error_reason
    assert after[ids["stuck"]].status == "unknown"
    assert after[ids["timed out"]].status == "unknown", "a timed-out settle may have landed on chain"
    assert (after[ids["refused"]].chain_id, after[ids["refused"]].status) == (8453, "failed")
    assert all(row.valid_before == 0 for row in after.values()), "not known for old rows"
    moved = {(event.payment_id, event.from_status, event.to_status, event.actor) for event in events}
    assert moved == {
        (ids["v1 copy"], "settled", "settled", "migration"),
        (ids["stuck"], "pending", "unknown", "migration"),
        (ids["timed out"], "failed", "unknown", "migration"),
    }
