"""x402 payments whose outcome is not seen, through the real Envoy with the official `x402` client, on
SQLite and PostgreSQL. The development facilitator settles on a stand-in chain (JSON-RPC at `/rpc`)
and misbehaves as production facilitators do: it answers after the gateway's timeout, holds its
answer while the client hangs up, drops a settle, or claims a nonce was used. Whatever it does, a
payment that reached the gateway's address is credited exactly once, with the chain's transaction
hash, and one that did not is never credited."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from crosscompute.v1 import admin_service_pb2 as admin_pb
from crosscompute.v1 import admin_service_pb2_grpc as admin_grpc
from eth_account import Account
from eth_account.signers.local import LocalAccount

from scripts.dev_facilitator import DevFacilitator
from server.settings import Settings
from tests.conftest import ADMIN_TOKEN, gateway_settings
from tests.support.db import query
from tests.support.gateway import Gateway, running_gateway
from tests.support.hangups import hang_up_after
from tests.support.payers import Agent, forged
from tests.support.supabase import SupabaseStandIn
from tests.support.waiting import eventually

PAY_TO = "0x1111111111111111111111111111111111111111"
USDC = "0x036cbd53842c5426634e7929541ec2318f3dcf7e"
ONE_DOLLAR_OF_CREDITS = 1_000_000_000  # 1.00 USD at 1000 credits per USD, in micro-credits


@pytest.fixture(scope="module")
def facilitator() -> Iterator[DevFacilitator]:
    with DevFacilitator().running() as running:
        yield running


@pytest.fixture(autouse=True)
def behaving(facilitator: DevFacilitator) -> Iterator[None]:
    facilitator.reset()
    yield
    facilitator.reset()


def shop_settings(
    database_url: str, supabase: SupabaseStandIn, facilitator: DevFacilitator, **more: str
) -> Settings:
    settings = {
        "X402_PAY_TO": PAY_TO,
        # The network by its CAIP-2 id, the form x402 v2 speaks.
        "X402_NETWORK": "eip155:84532",
        "X402_FACILITATOR_URL": facilitator.url,
        "X402_FACILITATOR_TIMEOUT_SECONDS": "1",
        "X402_EXPIRY_MARGIN_SECONDS": "1",
        **more,
    }
    return gateway_settings(database_url, supabase, **settings)


@pytest.fixture(scope="module")
def shop(database_url: str, supabase: SupabaseStandIn, facilitator: DevFacilitator) -> Iterator[Gateway]:
    """A gateway that reads the chain; its reconciler runs only when a test asks (`reconcile`)."""
    settings = shop_settings(
        database_url, supabase, facilitator, X402_RPC_URL=facilitator.rpc_url, X402_RECONCILE_SECONDS="0"
    )
    with running_gateway(settings) as running:
        yield running


@pytest.fixture(scope="module")
def blind(database_url: str, supabase: SupabaseStandIn, facilitator: DevFacilitator) -> Iterator[Gateway]:
    """A gateway without `X402_RPC_URL`: it cannot see the chain."""
    settings = shop_settings(database_url, supabase, facilitator, X402_RECONCILE_SECONDS="0")
    with running_gateway(settings) as running:
        yield running


@pytest.fixture
def wallet() -> LocalAccount:
    account: LocalAccount = Account.create()
    return account


@pytest.fixture
def agent(shop: Gateway, wallet: LocalAccount) -> Iterator[Agent]:
    payer = Agent(shop, wallet)
    yield payer
    payer.close()


def reconcile(gateway: Gateway) -> int:
    """One reconciling pass of the gateway's own reconciler, as its background loop makes."""
    runtime = gateway.server.runtime
    assert runtime is not None and runtime.settlements is not None
    return gateway.server.run(runtime.settlements.reconcile_once())


def nonce_of(headers: dict[str, str]) -> str:
    (value,) = headers.values()
    return str(json.loads(base64.b64decode(value))["payload"]["authorization"]["nonce"]).lower()


def stored(settings: Settings, nonce: str) -> list[dict[str, Any]]:
    return query(settings, "SELECT * FROM x402_payments WHERE nonce = :nonce", nonce=nonce)


def trail(settings: Settings, payment_id: str) -> list[tuple[str | None, str, str]]:
    rows = query(
        settings,
        "SELECT from_status, to_status, actor FROM x402_payment_events WHERE payment_id = :id "
        "ORDER BY created_at",
        id=payment_id,
    )
    return [(row["from_status"], row["to_status"], row["actor"]) for row in rows]


def purchases(agent: Agent) -> list[dict[str, Any]]:
    return query(
        agent.shop.settings,
        "SELECT amount_micro, reference FROM ledger_entries WHERE account_id = :id AND kind = 'purchase'",
        id=agent.account_id,
    )


def chain_tx(facilitator: DevFacilitator, nonce: str) -> str:
    """The transaction the stand-in chain recorded for this nonce's authorisation."""
    [tx] = {log["transactionHash"] for log in facilitator.chain.logs if log["topics"][2] == nonce}
    return str(tx)


def assert_pending(response: httpx.Response, status: str = "unknown") -> None:
    """What a client sees while the outcome is not known: never a 402 (a second payment)."""
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["error"]["code"] == "PAYMENT_PENDING"
    assert "do not sign a new one" in body["error"]["message"]
    assert body["payment"]["status"] == status
    assert int(response.headers["retry-after"]) >= 1
    assert "payment-required" not in response.headers


def lose_the_answer(
    agent: Agent, facilitator: DevFacilitator, version: int = 2
) -> tuple[dict[str, str], str]:
    """Pay once while the facilitator settles on chain but answers after the gateway's timeout."""
    headers = agent.payment(version)
    facilitator.answer_late_seconds = 2.0
    first = agent.topup(headers)
    facilitator.answer_late_seconds = 0.0
    assert_pending(first)
    nonce = nonce_of(headers)
    [row] = stored(agent.shop.settings, nonce)
    assert row["status"] == "unknown" and row["tx_hash"] is None
    assert agent.balance() == (0, 0), "nothing is credited while the outcome is unknown"
    assert chain_tx(facilitator, nonce), "the chain did settle it"
    return headers, nonce


@pytest.mark.parametrize("version", [1, 2])
def test_a_settle_whose_answer_was_lost_is_credited_once_by_a_retry(
    agent: Agent, facilitator: DevFacilitator, version: int
) -> None:
    headers, nonce = lose_the_answer(agent, facilitator, version)
    retried = agent.topup(headers)
    assert retried.status_code == 200, retried.text
    topup = retried.json()["topup"]
    assert topup["txHash"] == chain_tx(facilitator, nonce), "the on-chain transaction, read from the chain"
    assert agent.balance() == (ONE_DOLLAR_OF_CREDITS, ONE_DOLLAR_OF_CREDITS)
    [row] = stored(agent.shop.settings, nonce)
    assert (row["status"], row["resolved_by"], row["tx_hash"]) == ("settled", "chain", topup["txHash"])

    again = agent.topup(headers)
    assert again.status_code == 200 and again.json()["topup"]["id"] == topup["id"]
    assert agent.balance() == (ONE_DOLLAR_OF_CREDITS, ONE_DOLLAR_OF_CREDITS), "a replay credits nothing"
    assert len(purchases(agent)) == 1
    assert trail(agent.shop.settings, row["id"]) == [
        (None, "pending", "request"),
        ("pending", "settling", "request"),
        ("settling", "unknown", "request"),
        ("unknown", "settled", "request"),
    ]


def test_a_settle_whose_answer_was_lost_is_credited_once_by_the_reconciler_alone(
    shop: Gateway, agent: Agent, facilitator: DevFacilitator
) -> None:
    headers, nonce = lose_the_answer(agent, facilitator)
    eventually(lambda: reconcile(shop) >= 0 and stored(agent.shop.settings, nonce)[0]["status"] == "settled")
    [row] = stored(agent.shop.settings, nonce)
    assert (row["resolved_by"], row["tx_hash"]) == ("chain", chain_tx(facilitator, nonce))
    assert agent.balance() == (ONE_DOLLAR_OF_CREDITS, ONE_DOLLAR_OF_CREDITS)
    assert trail(agent.shop.settings, row["id"])[-1] == ("unknown", "settled", "reconciler")
    # The client comes back later: the original top-up, and nothing more.
    replay = agent.topup(headers)
    assert replay.status_code == 200 and replay.json()["topup"]["id"] == row["id"]
    assert len(purchases(agent)) == 1


def test_the_background_reconciler_closes_it_with_no_retry(
    database_url: str, supabase: SupabaseStandIn, facilitator: DevFacilitator, wallet: LocalAccount
) -> None:
    settings = shop_settings(
        database_url, supabase, facilitator, X402_RPC_URL=facilitator.rpc_url, X402_RECONCILE_SECONDS="1"
    )
    with running_gateway(settings) as live:
        payer = Agent(live, wallet)
        try:
            _headers, nonce = lose_the_answer(payer, facilitator)
            eventually(lambda: stored(live.settings, nonce)[0]["status"] == "settled", timeout=15)
            assert payer.balance() == (ONE_DOLLAR_OF_CREDITS, ONE_DOLLAR_OF_CREDITS)
            assert len(purchases(payer)) == 1
        finally:
            payer.close()


def test_a_client_that_hangs_up_mid_settle_is_credited_once(
    database_url: str, supabase: SupabaseStandIn, facilitator: DevFacilitator, wallet: LocalAccount
) -> None:
    # A patient gateway (10 s for the facilitator), so the answer comes after the hang-up but in time.
    settings = shop_settings(
        database_url,
        supabase,
        facilitator,
        X402_RPC_URL=facilitator.rpc_url,
        X402_RECONCILE_SECONDS="0",
        X402_FACILITATOR_TIMEOUT_SECONDS="10",
    )
    with running_gateway(settings) as patient:
        agent = Agent(patient, wallet)
        try:
            headers = agent.payment(2)
            nonce = nonce_of(headers)
            facilitator.hold_answer = threading.Event()
            # The client leaves once the transfer is on chain and the facilitator's answer is held:
            # never earlier (under load, a fixed client timeout could leave before the settle began).
            hang_up_after(
                patient,
                "/api/agents/topup",
                {},
                lambda: [log for log in facilitator.chain.logs if log["topics"][2] == nonce],
                {"authorization": f"Bearer {agent.key}", **headers},
                what="the settle to reach the chain",
            )
            facilitator.hold_answer.set()  # the facilitator's success reaches a gateway whose client is gone
            eventually(lambda: stored(patient.settings, nonce)[0]["status"] == "settled")
            [row] = stored(patient.settings, nonce)
            assert (row["resolved_by"], row["tx_hash"]) == ("facilitator", chain_tx(facilitator, nonce))
            assert agent.balance() == (ONE_DOLLAR_OF_CREDITS, ONE_DOLLAR_OF_CREDITS)
            replay = agent.topup(headers)
            assert replay.status_code == 200 and replay.json()["topup"]["id"] == row["id"]
            assert len(purchases(agent)) == 1
        finally:
            agent.close()


def test_nonce_used_while_the_chain_shows_the_authorisation_paid_someone_else_credits_nothing(
    agent: Agent, facilitator: DevFacilitator, wallet: LocalAccount
) -> None:
    headers = agent.payment(2)
    nonce = nonce_of(headers)
    # The payer spent the same nonce on another authorisation, to another address, first.
    facilitator.chain.transfer_with_authorization(
        USDC,
        wallet.address,
        "0x2222222222222222222222222222222222222222",
        1_000_000,
        nonce,
        label="elsewhere",
    )
    facilitator.claim_nonce_used = True
    response = agent.topup(headers)
    assert response.status_code == 402, response.text
    assert response.json()["error"].startswith("PAYMENT_NOT_RECEIVED")
    assert "payment-required" in response.headers
    [row] = stored(agent.shop.settings, nonce)
    assert (row["status"], row["resolved_by"], row["tx_hash"]) == ("failed", "chain", None)
    assert agent.balance() == (0, 0)
    assert purchases(agent) == []


def test_nonce_used_on_a_retry_while_the_chain_shows_no_transfer_credits_nothing(
    shop: Gateway, agent: Agent, facilitator: DevFacilitator
) -> None:
    headers = agent.payment(2)
    nonce = nonce_of(headers)
    settles = facilitator.calls.count("/settle")
    facilitator.drop_settle_seconds = 1.5  # the settle never reaches the chain, and is unanswered
    assert_pending(agent.topup(headers))
    facilitator.drop_settle_seconds = 0.0
    facilitator.claim_nonce_used = True
    for _ in range(2):
        assert_pending(agent.topup(headers))
        reconcile(shop)
    [row] = stored(agent.shop.settings, nonce)
    assert row["status"] == "unknown" and row["tx_hash"] is None
    assert not [log for log in facilitator.chain.logs if log["topics"][2] == nonce], "nothing on chain"
    assert agent.balance() == (0, 0)
    assert facilitator.calls.count("/settle") - settles == 3, "each retry sent the same settle again"


def test_an_authorisation_never_used_by_its_valid_before_expires_and_a_fresh_payment_works(
    shop: Gateway, agent: Agent, facilitator: DevFacilitator
) -> None:
    headers = agent.payment(2, forged("maxTimeoutSeconds", 3))  # validBefore: now + 3 s
    nonce = nonce_of(headers)
    facilitator.drop_settle_seconds = 1.5
    assert_pending(agent.topup(headers))
    facilitator.drop_settle_seconds = 0.0
    [row] = stored(agent.shop.settings, nonce)
    assert row["valid_before"] <= time.time() + 3
    reconcile(shop)
    assert stored(agent.shop.settings, nonce)[0]["status"] == "unknown", (
        "not before validBefore and its margin"
    )
    eventually(
        lambda: reconcile(shop) >= 0 and stored(agent.shop.settings, nonce)[0]["status"] == "expired",
        timeout=15,
    )
    assert stored(agent.shop.settings, nonce)[0]["resolved_by"] == "chain"
    assert agent.balance() == (0, 0)
    expired = agent.topup(headers)
    assert expired.status_code == 402 and expired.json()["error"].startswith("PAYMENT_EXPIRED")

    fresh = agent.topup(agent.payment(2))
    assert fresh.status_code == 200, fresh.text
    assert agent.balance() == (ONE_DOLLAR_OF_CREDITS, ONE_DOLLAR_OF_CREDITS)


def test_one_authorisation_sent_as_v2_then_rewrapped_as_v1_is_one_payment_credited_once(agent: Agent) -> None:
    headers = agent.payment(2)
    paid = agent.topup(headers)
    assert paid.status_code == 200, paid.text
    v2 = json.loads(base64.b64decode(headers["PAYMENT-SIGNATURE"]))
    assert v2["accepted"]["network"] == "eip155:84532"
    v1 = {"x402Version": 1, "scheme": "exact", "network": "base-sepolia", "payload": v2["payload"]}
    rewrapped = agent.topup({"X-PAYMENT": base64.b64encode(json.dumps(v1).encode()).decode()})
    assert rewrapped.status_code == 200, rewrapped.text
    assert rewrapped.json()["topup"]["id"] == paid.json()["topup"]["id"]
    receipt = json.loads(base64.b64decode(rewrapped.headers["x-payment-response"]))
    assert receipt["network"] == "base-sepolia", "the receipt speaks the version it was asked in"
    assert len(stored(agent.shop.settings, nonce_of(headers))) == 1
    assert agent.balance() == (ONE_DOLLAR_OF_CREDITS, ONE_DOLLAR_OF_CREDITS)
    assert len(purchases(agent)) == 1


def test_a_caip2_network_is_offered_in_both_versions_and_pays_in_v1(agent: Agent) -> None:
    challenge = agent.topup()
    assert challenge.json()["accepts"][0]["network"] == "base-sepolia"
    v2 = json.loads(base64.b64decode(challenge.headers["payment-required"]))
    assert v2["accepts"][0]["network"] == "eip155:84532"
    health = agent.http.get("/health").json()
    assert health["x402"]["network"] == "base-sepolia" and health["paymentChannels"]["x402"]["enabled"]
    paid = agent.topup(agent.payment(1))
    assert paid.status_code == 200, paid.text
    assert agent.balance() == (ONE_DOLLAR_OF_CREDITS, ONE_DOLLAR_OF_CREDITS)


def admin(gateway: Gateway) -> tuple[admin_grpc.AdminServiceStub, grpc.Channel]:
    channel = grpc.insecure_channel(gateway.grpc_target)
    return admin_grpc.AdminServiceStub(channel), channel


def test_without_the_chain_an_unknown_payment_waits_for_an_operator_who_settles_it_once(
    blind: Gateway, facilitator: DevFacilitator, wallet: LocalAccount
) -> None:
    payer = Agent(blind, wallet)
    stub, channel = admin(blind)
    token = (("x-crosscompute-admin-token", ADMIN_TOKEN),)
    try:
        headers, nonce = lose_the_answer(payer, facilitator)
        # A retry gets no clear answer (the facilitator says the nonce is used), and the reconciler,
        # without the chain, has no evidence: it stays unknown rather than guessing either way.
        assert_pending(payer.topup(headers))
        reconcile(blind)
        [row] = stored(blind.settings, nonce)
        assert row["status"] == "unknown"
        listed = stub.ListPaymentsInDoubt(admin_pb.ListPaymentsInDoubtRequest(), metadata=token, timeout=10)
        [doubt] = [p for p in listed.payments if p.id == row["id"]]
        assert doubt.status == "unknown" and doubt.payer == wallet.address.lower()
        assert [e.to_status for e in doubt.events] == [
            "pending",
            "settling",
            "unknown",
            "settling",
            "unknown",
        ]

        with pytest.raises(grpc.RpcError) as refused:
            stub.ResolvePayment(
                admin_pb.ResolvePaymentRequest(
                    payment_id=row["id"],
                    outcome=admin_pb.ResolvePaymentRequest.OUTCOME_SETTLED,
                    tx_hash="0x12",
                ),
                metadata=token,
                timeout=10,
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        tx = chain_tx(facilitator, nonce)
        settle = admin_pb.ResolvePaymentRequest(
            payment_id=row["id"],
            outcome=admin_pb.ResolvePaymentRequest.OUTCOME_SETTLED,
            tx_hash=tx,
            reason="basescan shows the transfer to our address",
        )
        resolved = stub.ResolvePayment(settle, metadata=token, timeout=10).payment
        assert (resolved.status, resolved.tx_hash) == ("settled", tx)
        assert resolved.events[-1].actor == "operator" and "basescan" in resolved.events[-1].detail
        assert stub.ResolvePayment(settle, metadata=token, timeout=10).payment.status == "settled"
        assert payer.balance() == (ONE_DOLLAR_OF_CREDITS, ONE_DOLLAR_OF_CREDITS), "credited once"
        with pytest.raises(grpc.RpcError) as conflict:
            stub.ResolvePayment(
                admin_pb.ResolvePaymentRequest(
                    payment_id=row["id"], outcome=admin_pb.ResolvePaymentRequest.OUTCOME_FAILED, reason="oops"
                ),
                metadata=token,
                timeout=10,
            )
        assert conflict.value.code() == grpc.StatusCode.ALREADY_EXISTS
        replay = payer.topup(headers)
        assert replay.status_code == 200 and replay.json()["topup"]["txHash"] == tx
        assert len(purchases(payer)) == 1
        listed = stub.ListPaymentsInDoubt(admin_pb.ListPaymentsInDoubtRequest(), metadata=token, timeout=10)
        assert row["id"] not in {p.id for p in listed.payments}
    finally:
        payer.close()
        channel.close()


def test_an_operator_fails_a_payment_in_doubt_and_nothing_is_credited(
    blind: Gateway, facilitator: DevFacilitator, wallet: LocalAccount
) -> None:
    payer = Agent(blind, wallet)
    stub, channel = admin(blind)
    token = (("x-crosscompute-admin-token", ADMIN_TOKEN),)
    try:
        headers = payer.payment(2)
        facilitator.drop_settle_seconds = 1.5
        assert_pending(payer.topup(headers))
        facilitator.drop_settle_seconds = 0.0
        [row] = stored(blind.settings, nonce_of(headers))
        with pytest.raises(grpc.RpcError) as anonymous:
            stub.ListPaymentsInDoubt(admin_pb.ListPaymentsInDoubtRequest(), timeout=10)
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
        failed = stub.ResolvePayment(
            admin_pb.ResolvePaymentRequest(
                payment_id=row["id"],
                outcome=admin_pb.ResolvePaymentRequest.OUTCOME_FAILED,
                reason="no transfer on chain by validBefore",
            ),
            metadata=token,
            timeout=10,
        ).payment
        assert failed.status == "failed" and failed.events[-1].actor == "operator"
        assert payer.balance() == (0, 0)
        assert stored(blind.settings, nonce_of(headers))[0]["resolved_by"] == "operator"
        # The operator's word is final: the same payment sent again is not settled behind it.
        again = payer.topup(headers)
        assert again.status_code == 402 and again.json()["error"].startswith("PAYMENT_NOT_RECEIVED")
        assert payer.balance() == (0, 0)
    finally:
        payer.close()
        channel.close()
