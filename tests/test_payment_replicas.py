"""x402 payments across three replicas behind one Envoy on one PostgreSQL, each replica running its
own reconciler (no leader). A settle whose answer was lost, retried 20 times at once across the
replicas, is credited once; a replica killed between the facilitator's success and the credit
leaves a payment the other replicas close from the chain, credited once."""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest
from eth_account import Account

from scripts.dev_facilitator import DevFacilitator
from scripts.replicas import Replicas, running
from server.settings import Settings
from tests.conftest import ADMIN_TOKEN
from tests.support.databases import postgres_database
from tests.support.db import query
from tests.support.payers import Agent
from tests.support.processes import owner_of_local_port
from tests.support.supabase import JWT_SECRET, SupabaseStandIn
from tests.support.waiting import eventually

PAY_TO = "0x1111111111111111111111111111111111111111"
CREDITS = 1_000_000_000  # 1.00 USD of credits, in micro-credits


@dataclass(frozen=True)
class ReplicaShop:
    """The replicas' Envoy, as an agent pays it: its URL, and the settings to read the database."""

    base_url: str
    settings: Settings


@pytest.fixture(scope="module")
def facilitator() -> Iterator[DevFacilitator]:
    with DevFacilitator().running() as running_facilitator:
        yield running_facilitator


@pytest.fixture(scope="module")
def replicas(
    supabase: SupabaseStandIn, facilitator: DevFacilitator
) -> Iterator[tuple[Replicas, ReplicaShop]]:
    with postgres_database("payments") as (_name, url):
        environ = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("CROSSCOMPUTE_", "DATABASE_URL", "X402_"))
            },
            "DATABASE_URL": url,
            "SUPABASE_URL": supabase.url,
            "SUPABASE_JWT_SECRET": JWT_SECRET,
            "CROSSCOMPUTE_ADMIN_TOKEN": ADMIN_TOKEN,
            "CROSSCOMPUTE_AGENT_REGISTRATIONS_PER_HOUR": "1000",
            "CROSSCOMPUTE_LOG_LEVEL": "WARNING",
            "X402_PAY_TO": PAY_TO,
            "X402_NETWORK": "eip155:84532",
            "X402_FACILITATOR_URL": facilitator.url,
            "X402_FACILITATOR_TIMEOUT_SECONDS": "1",
            "X402_RPC_URL": facilitator.rpc_url,
            "X402_RECONCILE_SECONDS": "1",
        }
        with running(3, environ) as started:
            assert started.edge is not None
            yield started, ReplicaShop(f"http://127.0.0.1:{started.edge.http}", Settings.from_env(environ))


def nonce_of(headers: dict[str, str]) -> str:
    (value,) = headers.values()
    return str(json.loads(base64.b64decode(value))["payload"]["authorization"]["nonce"]).lower()


def stored(shop: ReplicaShop, nonce: str) -> dict[str, object]:
    [row] = query(shop.settings, "SELECT * FROM x402_payments WHERE nonce = :nonce", nonce=nonce)
    return row


def purchases(agent: Agent) -> int:
    return int(
        query(
            agent.shop.settings,
            "SELECT COUNT(*) AS n FROM ledger_entries WHERE account_id = :id AND kind = 'purchase'",
            id=agent.account_id,
        )[0]["n"]
    )


@pytest.mark.postgres
def test_twenty_concurrent_retries_of_a_lost_answer_across_three_replicas_credit_once(
    replicas: tuple[Replicas, ReplicaShop], facilitator: DevFacilitator
) -> None:
    _replicas, shop = replicas
    agent = Agent(shop, Account.create())
    try:
        headers = agent.payment(2)
        facilitator.answer_late_seconds = 2.0
        first = agent.topup(headers)
        facilitator.answer_late_seconds = 0.0
        assert first.status_code == 503 and first.json()["error"]["code"] == "PAYMENT_PENDING", first.text
        with ThreadPoolExecutor(20) as pool:
            retries = list(pool.map(lambda _: agent.topup(headers), range(20)))
        statuses = {response.status_code for response in retries}
        assert statuses <= {200, 503}, statuses
        for response in retries:
            if response.status_code == 503:
                assert response.json()["error"]["code"] == "PAYMENT_PENDING"
        ids = {response.json()["topup"]["id"] for response in retries if response.status_code == 200}
        assert len(ids) <= 1
        final = eventually(lambda: settled_answer(agent, headers), timeout=20)
        assert ids <= {final.json()["topup"]["id"]}, "every 200 is the same top-up"
        assert stored(shop, nonce_of(headers))["status"] == "settled"
        assert agent.balance() == (CREDITS, CREDITS)
        assert purchases(agent) == 1
    finally:
        agent.close()


@pytest.mark.postgres
def test_a_replica_killed_between_the_facilitators_success_and_the_credit_is_credited_once(
    replicas: tuple[Replicas, ReplicaShop], facilitator: DevFacilitator
) -> None:
    started, shop = replicas
    agent = Agent(shop, Account.create())
    try:
        headers = agent.payment(2)
        nonce = nonce_of(headers)
        facilitator.hold_answer = threading.Event()
        ports = len(facilitator.settle_ports)
        outcome: list[int] = []
        caller = threading.Thread(target=lambda: outcome.append(safe_status(agent, headers)), daemon=True)
        caller.start()
        eventually(
            lambda: [log for log in facilitator.chain.logs if log["topics"][2] == nonce],
            what="the facilitator to settle on chain",
        )
        assert len(facilitator.settle_ports) == ports + 1
        pids = [process.pid for process in started.processes if process.poll() is None]
        victim = eventually(lambda: owner_of_local_port(facilitator.settle_ports[ports], pids))
        index = [process.pid for process in started.processes].index(victim)
        started.kill(index)  # it dies holding the facilitator's success, before any credit
        facilitator.hold_answer.set()
        caller.join(30)
        assert outcome and outcome[0] != 200, "the request died with its replica"
        assert agent.balance() == (0, 0)

        eventually(lambda: stored(shop, nonce)["status"] == "settled", timeout=30, what="the reconciler")
        row = stored(shop, nonce)
        assert row["resolved_by"] == "chain"
        assert agent.balance() == (CREDITS, CREDITS)
        replay = agent.topup(headers)
        assert replay.status_code == 200 and replay.json()["topup"]["id"] == row["id"]
        assert purchases(agent) == 1
        events = query(
            shop.settings,
            "SELECT to_status, actor FROM x402_payment_events WHERE payment_id = :id ORDER BY created_at",
            id=row["id"],
        )
        assert [(e["to_status"], e["actor"]) for e in events][-2:] == [
            ("unknown", "reconciler"),
            ("settled", "reconciler"),
        ]
    finally:
        facilitator.reset()
        agent.close()


def settled_answer(agent: Agent, headers: dict[str, str]) -> httpx.Response | None:
    answer = agent.topup(headers)
    return answer if answer.status_code == 200 else None


def safe_status(agent: Agent, headers: dict[str, str]) -> int:
    try:
        return agent.topup(headers).status_code
    except httpx.TransportError:
        return 599
