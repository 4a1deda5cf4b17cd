"""Agents buy credits with x402, paying with the official `x402` client and an eth_account wallet,
v1 and v2, through the real Envoy, against the development facilitator (real signature checks,
fake settlements). Nothing but a valid, matching, first-time payment ever adds a credit."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from scripts.dev_facilitator import FAKE_TX_PREFIX, DevFacilitator
from tests.conftest import gateway_settings
from tests.support.fake_provider import FakeProvider
from tests.support.gateway import Gateway, running_gateway
from tests.support.payers import Agent, Challenge, forged
from tests.support.supabase import SupabaseStandIn

PAY_TO = "0x1111111111111111111111111111111111111111"
USDC = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"


@pytest.fixture(scope="module")
def facilitator() -> Iterator[DevFacilitator]:
    with DevFacilitator().running() as running:
        yield running


@pytest.fixture(scope="module")
def shop(
    database_url: str, supabase: SupabaseStandIn, facilitator: DevFacilitator, fake: FakeProvider
) -> Iterator[Gateway]:
    settings = gateway_settings(
        database_url,
        supabase,
        X402_PAY_TO=PAY_TO,
        X402_NETWORK="base-sepolia",
        X402_FACILITATOR_URL=facilitator.url,
        X402_FACILITATOR_TIMEOUT_SECONDS="1",
        OPENAI_API_KEY="sk-fake",
        OPENAI_BASE_URL=f"{fake.url}/v1",
    )
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


def test_health_shows_the_x402_channel(shop: Gateway) -> None:
    body = httpx.get(f"{shop.base_url}/health").json()
    assert body["paymentChannels"]["x402"]["enabled"] is True
    assert body["x402"] == {"enabled": True, "network": "base-sepolia", "asset": USDC, "payTo": PAY_TO}


def test_without_payment_the_answer_is_a_challenge_both_versions_understand(agent: Agent) -> None:
    response = agent.topup(body={"amountUsd": "2.50"})
    assert response.status_code == 402
    assert response.headers["x-crosscompute-payment-header-present"] == "false"
    assert response.headers["x-crosscompute-payment-header-kind"] == "none"
    v1 = response.json()
    assert v1["x402Version"] == 1
    offer = v1["accepts"][0]
    assert (offer["scheme"], offer["network"], offer["maxAmountRequired"]) == (
        "exact",
        "base-sepolia",
        "2500000",
    )
    assert (offer["payTo"], offer["asset"], offer["extra"]) == (
        PAY_TO,
        USDC,
        {"name": "USDC", "version": "2"},
    )
    assert offer["resource"].endswith("/api/agents/topup")
    v2 = json.loads(base64.b64decode(response.headers["payment-required"]))
    assert v2["x402Version"] == 2
    assert v2["accepts"][0] == {
        "scheme": "exact",
        "network": "eip155:84532",
        "amount": "2500000",
        "asset": USDC,
        "payTo": PAY_TO,
        "maxTimeoutSeconds": 300,
        "extra": {"name": "USDC", "version": "2"},
    }


@pytest.mark.parametrize("version", [1, 2])
def test_a_payment_buys_credits_once_and_the_agent_spends_them(
    agent: Agent, wallet: LocalAccount, version: int, shop: Gateway
) -> None:
    headers = agent.payment(version)
    assert set(headers) == ({"X-PAYMENT"} if version == 1 else {"PAYMENT-SIGNATURE"})
    paid = agent.topup(headers)
    assert paid.status_code == 200, paid.text
    body = paid.json()
    topup = body["topup"]
    assert topup["amountUsd"] == "1.00" and topup["credits"] == 1000
    assert topup["txHash"].startswith(FAKE_TX_PREFIX)
    assert topup["payer"].lower() == wallet.address.lower()
    assert body["account"]["creditsPurchased"] == 1000
    assert paid.headers["x-crosscompute-payment-header-present"] == "true"
    assert paid.headers["x-crosscompute-payment-header-kind"] == (
        "x-payment" if version == 1 else "payment-signature"
    )
    receipt = json.loads(
        base64.b64decode(paid.headers["x-payment-response" if version == 1 else "payment-response"])
    )
    assert receipt["success"] is True and receipt["transaction"] == topup["txHash"]
    assert agent.balance() == (1_000_000_000, 1_000_000_000)

    replay = agent.topup(headers)
    assert replay.status_code == 200
    assert replay.json()["topup"]["id"] == topup["id"]
    assert agent.balance() == (1_000_000_000, 1_000_000_000), "a replay credits nothing"

    with openai.OpenAI(base_url=f"{shop.base_url}/v1", api_key=agent.key, max_retries=0) as client:
        client.chat.completions.create(
            model="openai/gpt-5-mini", messages=[{"role": "user", "content": "Hi"}], max_tokens=5
        )
    balance, ledger = agent.balance()
    assert balance == ledger < 1_000_000_000

    per_model = agent.http.get("/api/agents/usage-models", headers={"authorization": f"Bearer {agent.key}"})
    assert per_model.status_code == 200
    [item] = per_model.json()["items"]
    assert (item["provider"], item["model"], item["requestCount"]) == ("openai", "openai/gpt-5-mini", 1)
    assert (item["inputTokens"], item["outputTokens"], item["totalTokens"]) == (20, 5, 25)
    assert item["lastRequestAt"] and item["updatedAt"]
    usage = agent.http.get("/api/agents/usage", headers={"authorization": f"Bearer {agent.key}"}).json()[
        "usage"
    ]
    assert usage["creditsPurchased"] == 1000 and usage["requestCount"] == 1


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda v: forged("maxAmountRequired" if v == 1 else "amount", "1"), "PAYMENT_AMOUNT_MISMATCH"),
        (
            lambda v: forged("payTo", "0x2222222222222222222222222222222222222222"),
            "PAYMENT_RECIPIENT_MISMATCH",
        ),
        # v1 names no asset beside the signature: the signature, made for another token, fails.
        (
            lambda v: forged("asset", "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"),
            "PAYMENT_ASSET_MISMATCH|v1:PAYMENT_SIGNATURE_INVALID",
        ),
        (lambda v: forged("network", "base" if v == 1 else "eip155:8453"), "PAYMENT_NETWORK_MISMATCH"),
        (lambda v: forged("maxTimeoutSeconds", -60), "PAYMENT_EXPIRED"),
    ],
    ids=["amount", "pay-to", "asset", "network", "expired"],
)
def test_mismatched_payments_are_402_and_credit_nothing(
    agent: Agent, version: int, change: Callable[[int], Challenge], reason: str, facilitator: DevFacilitator
) -> None:
    calls = len(facilitator.calls)
    response = agent.topup(agent.payment(version, change(version)))
    assert response.status_code == 402, response.text
    assert response.headers["x-crosscompute-payment-header-present"] == "true"
    assert "payment-required" in response.headers, "a fresh challenge comes with the refusal"
    assert response.json()["x402Version"] == 1
    expected = reason.split("|v1:")[1] if version == 1 and "|v1:" in reason else reason.split("|")[0]
    assert response.json()["error"].startswith(expected), response.json()["error"]
    assert agent.balance() == (0, 0)
    assert len(facilitator.calls) == calls, "nothing reached the facilitator"


def test_a_tampered_signature_or_a_not_yet_valid_authorisation_is_402(agent: Agent) -> None:
    header = agent.payment(2)["PAYMENT-SIGNATURE"]
    payload = json.loads(base64.b64decode(header))
    signature = payload["payload"]["signature"]
    # Flip one bit of r (not the last bytes: rewriting s and v there can leave an equivalent signature).
    payload["payload"]["signature"] = signature[:2] + format(int(signature[2], 16) ^ 1, "x") + signature[3:]
    tampered = base64.b64encode(json.dumps(payload).encode()).decode()
    refused = agent.topup({"PAYMENT-SIGNATURE": tampered})
    assert refused.status_code == 402
    assert "signature" in refused.json()["error"]

    # validAfter in the future: the signature no longer matches either, but the window is checked first.
    payload = json.loads(base64.b64decode(header))
    payload["payload"]["authorization"]["validAfter"] = str(2**40)
    refused = agent.topup({"PAYMENT-SIGNATURE": base64.b64encode(json.dumps(payload).encode()).decode()})
    assert refused.status_code == 402
    assert "not valid yet" in refused.json()["error"]
    assert agent.balance() == (0, 0)


def test_a_malformed_header_is_400(agent: Agent) -> None:
    for header in (
        {"PAYMENT-SIGNATURE": "not base64!"},
        {"X-PAYMENT": base64.b64encode(b'{"x402Version": 1}').decode()},
    ):
        response = agent.topup(header)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "MALFORMED_PAYMENT"
        assert response.headers["x-crosscompute-payment-header-present"] == "true"
    assert agent.balance() == (0, 0)


def test_racing_copies_of_one_payment_credit_once(agent: Agent) -> None:
    headers = agent.payment(2)
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: agent.topup(headers), range(8)))
    statuses = sorted(response.status_code for response in responses)
    assert set(statuses) <= {200, 503} and 200 in statuses
    for waiting in (r for r in responses if r.status_code == 503):
        # Never a 402 while another request settles it: that would invite a second payment.
        assert waiting.json()["error"]["code"] == "PAYMENT_PENDING"
        assert int(waiting.headers["retry-after"]) >= 1
    assert len({r.json()["topup"]["id"] for r in responses if r.status_code == 200}) == 1
    assert agent.balance() == (1_000_000_000, 1_000_000_000)


def test_another_agent_cannot_replay_a_payment(agent: Agent, shop: Gateway, wallet: LocalAccount) -> None:
    headers = agent.payment(2)
    assert agent.topup(headers).status_code == 200
    thief = Agent(shop, Account.create())
    try:
        stolen = thief.topup(headers)
        assert stolen.status_code == 409
        assert stolen.json()["error"]["code"] == "PAYMENT_ALREADY_USED"
        assert thief.balance() == (0, 0)
    finally:
        thief.http.close()


@pytest.mark.parametrize("trouble", ["down", "slow"])
def test_a_failing_facilitator_credits_nothing_and_the_same_payment_settles_once_later(
    agent: Agent, facilitator: DevFacilitator, trouble: str
) -> None:
    headers = agent.payment(2)
    if trouble == "down":
        facilitator.failing = True
    else:
        facilitator.delay_seconds = 2.0
    try:
        response = agent.topup(headers)
    finally:
        facilitator.failing, facilitator.delay_seconds = False, 0.0
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "FACILITATOR_UNAVAILABLE"
    assert agent.balance() == (0, 0)

    retried = agent.topup(headers)
    assert retried.status_code == 200, retried.text
    assert agent.balance() == (1_000_000_000, 1_000_000_000)
    assert agent.topup(headers).json()["topup"]["id"] == retried.json()["topup"]["id"]
    assert agent.balance() == (1_000_000_000, 1_000_000_000)


def test_amounts_are_checked(agent: Agent) -> None:
    for amount in ("0.01", "1000", "1.0000001", "lots"):
        response = agent.topup(body={"amountUsd": amount})
        assert response.status_code == 400, amount
        assert "amountUsd" in response.json()["error"]["message"]


def test_topups_need_an_agent_key(shop: Gateway) -> None:
    response = httpx.post(f"{shop.base_url}/api/agents/topup", json={})
    assert response.status_code == 401
    assert response.headers["x-crosscompute-payment-header-present"] == "false"


def test_x402_off_is_503(gateway: Gateway, http: httpx.Client) -> None:
    key = http.post("/api/agents/register", json={"agentId": f"nopay-{uuid.uuid4().hex[:8]}"}).json()[
        "apiKey"
    ]
    response = http.post("/api/agents/topup", json={}, headers={"authorization": f"Bearer {key}"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "X402_DISABLED"


def test_the_skill_file_describes_this_deployment(shop: Gateway) -> None:
    response = httpx.get(f"{shop.base_url}/api/agents/skill-md")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/markdown; charset=utf-8"
    text = response.text
    assert text.startswith("# CrossCompute API")
    assert "/api/agents/register" in text and "/api/agents/topup" in text
    assert PAY_TO in text and USDC in text and "base-sepolia" in text
    assert "| `openai/gpt-5-mini` | 250 | 2000 |" in text, "prices come from the live catalog"
    assert "sk-fake" not in text
