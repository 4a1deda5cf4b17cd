"""What the chain proves about an x402 payment, read by `ChainClient` from the development chain
through an in-memory transport (no network, no database): paid to us, spent on someone else, not
used yet, or not to be trusted (another chain, a failed transaction, another amount or asset)."""

from __future__ import annotations

import json

import httpx
import pytest

from scripts.dev_chain import DevChain
from server.domain.payments.chain import Authorization, ChainClient, ChainUnavailable

USDC = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
PAYER = "0x2222222222222222222222222222222222222222"
PAY_TO = "0x1111111111111111111111111111111111111111"
SOMEONE_ELSE = "0x3333333333333333333333333333333333333333"
NONCE = "0x" + "ab" * 32


def client(chain: DevChain, chain_id: int = 84532) -> ChainClient:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=chain.answer(json.loads(request.content)))

    return ChainClient("http://chain.test/rpc", chain_id, 5.0, transport=httpx.MockTransport(answer))


def ours(amount: int = 1_000_000, asset: str = USDC) -> Authorization:
    return Authorization(asset=asset, payer=PAYER, nonce=NONCE, pay_to=PAY_TO, amount=amount, from_block=None)


async def test_a_transfer_to_us_in_the_authorisations_transaction_is_proof_of_payment() -> None:
    chain = DevChain()
    tx = chain.transfer_with_authorization(USDC, PAYER, PAY_TO, 1_000_000, NONCE)
    evidence = await client(chain).evidence(ours())
    assert (evidence.used, evidence.paid, evidence.paid_tx) == (True, True, tx)
    assert chain.calls[:2] == ["eth_chainId", "eth_call"], "authorizationState is the cheap first test"
    assert {"eth_getLogs", "eth_getTransactionReceipt"} <= set(chain.calls)


async def test_an_unused_authorisation_is_not_paid_and_costs_one_call() -> None:
    chain = DevChain()
    evidence = await client(chain).evidence(ours())
    assert (evidence.used, evidence.paid) == (False, False)
    assert chain.calls == ["eth_chainId", "eth_call"]


async def test_a_nonce_spent_on_another_recipient_is_not_a_payment_to_us() -> None:
    chain = DevChain()
    tx = chain.transfer_with_authorization(USDC, PAYER, SOMEONE_ELSE, 1_000_000, NONCE)
    evidence = await client(chain).evidence(ours())
    assert (evidence.used, evidence.paid, evidence.other_tx) == (True, False, tx)


async def test_a_transfer_of_another_amount_is_not_our_payment() -> None:
    chain = DevChain()
    chain.transfer_with_authorization(USDC, PAYER, PAY_TO, 1_000_000, NONCE)
    evidence = await client(chain).evidence(ours(amount=2_000_000))
    assert evidence.used and not evidence.paid


async def test_a_failed_transaction_proves_nothing_was_paid() -> None:
    chain = DevChain()
    tx = chain.transfer_with_authorization(USDC, PAYER, PAY_TO, 1_000_000, NONCE)
    chain.receipts[tx]["status"] = "0x0"
    evidence = await client(chain).evidence(ours())
    assert not evidence.paid


async def test_an_endpoint_on_another_chain_is_never_believed() -> None:
    chain = DevChain(chain_id=8453)
    chain.transfer_with_authorization(USDC, PAYER, PAY_TO, 1_000_000, NONCE)
    with pytest.raises(ChainUnavailable, match="serves chain 8453"):
        await client(chain, chain_id=84532).evidence(ours())


async def test_an_endpoint_that_answers_errors_is_unavailable_not_a_no() -> None:
    chain = DevChain()
    chain.failing = True
    with pytest.raises(ChainUnavailable):
        await client(chain).evidence(ours())


async def test_a_used_nonce_whose_event_is_out_of_reach_is_not_taken_for_either_answer() -> None:
    chain = DevChain()
    chain.transfer_with_authorization(USDC, PAYER, PAY_TO, 1_000_000, NONCE)
    past = Authorization(USDC, PAYER, NONCE, PAY_TO, 1_000_000, from_block=chain.block + 1)
    with pytest.raises(ChainUnavailable, match="event was not found"):
        await client(chain).evidence(past)
