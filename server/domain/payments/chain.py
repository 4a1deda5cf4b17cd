"""Evidence from the chain: was an EIP-3009 authorisation used, and did its transaction pay us?

Read over Ethereum JSON-RPC (`X402_RPC_URL`): `authorizationState(payer, nonce)` by `eth_call` is the
cheap first test; when it is used, `eth_getLogs` finds the asset's `AuthorizationUsed(payer, nonce)`
event and `eth_getTransactionReceipt` its transaction, which must carry `Transfer(payer, payTo,
amount)` from the same asset and have succeeded. A used nonce without that transfer is not a payment
to us (the payer spent it on another authorisation).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import httpx

#: `authorizationState(address,bytes32)`.
AUTHORIZATION_STATE = "0xe94a0102"
#: topic0 of `AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce)`.
AUTHORIZATION_USED = "0x98de503528ee59b575ef0c0a2576a82497bfc029a5685b209e9ec333479b10a5"
#: topic0 of `Transfer(address indexed from, address indexed to, uint256 value)`.
TRANSFER = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"


#: Without a recorded starting block, how far back to look for a payment's events (about a day on Base).
LOOKBACK_BLOCKS = 50_000


class ChainUnavailable(Exception):
    """The RPC endpoint could not answer, answered an error, or serves another chain."""


@dataclass(frozen=True)
class Authorization:
    """What to look for: this payer's nonce on this asset, paying `amount` to `pay_to`."""

    asset: str
    payer: str
    nonce: str
    pay_to: str
    amount: int
    from_block: int | None = None


@dataclass(frozen=True)
class Evidence:
    """What the chain says. `used` false: never used (yet). `paid_tx`: the transaction that paid us.
    `used` with no `paid_tx`: spent on something else (`other_tx` when it was found)."""

    used: bool
    paid_tx: str = ""
    other_tx: str = ""

    @property
    def paid(self) -> bool:
        return bool(self.paid_tx)


def topic_address(address: str) -> str:
    """An address as a 32-byte log topic."""
    return "0x" + address.lower().removeprefix("0x").rjust(64, "0")


def _nonce(nonce: str) -> str:
    return "0x" + nonce.lower().removeprefix("0x").rjust(64, "0")


def transfer_matches(log: dict[str, Any], authorization: Authorization) -> bool:
    """Whether a receipt's log is the asset's `Transfer(payer, payTo, amount)`."""
    topics = [str(topic).lower() for topic in log.get("topics") or ()]
    if str(log.get("address", "")).lower() != authorization.asset.lower() or len(topics) != 3:
        return False
    try:
        value = int(str(log.get("data") or "0x0"), 16)
    except ValueError:
        return False
    return (
        topics[0] == TRANSFER
        and topics[1] == topic_address(authorization.payer)
        and topics[2] == topic_address(authorization.pay_to)
        and value == authorization.amount
    )


class ChainClient:
    """A small JSON-RPC client for the configured network (checked by `eth_chainId` before use)."""

    def __init__(
        self,
        url: str,
        chain_id: int,
        timeout_seconds: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._client = httpx.AsyncClient(timeout=timeout_seconds, transport=transport)
        self._url = url
        self._chain_id = chain_id
        self._checked = False
        self._ids = itertools.count(1)

    async def _call(self, method: str, params: list[Any]) -> Any:
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        try:
            response = await self._client.post(self._url, json=body)
            response.raise_for_status()
            answer = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise ChainUnavailable(f"{method}: {type(error).__name__}") from None
        if not isinstance(answer, dict) or "error" in answer or "result" not in answer:
            raise ChainUnavailable(f"{method}: no result")
        return answer["result"]

    async def _check_chain(self) -> None:
        if self._checked:
            return
        served = await self._call("eth_chainId", [])
        if int(str(served), 16) != self._chain_id:
            raise ChainUnavailable(
                f"the RPC endpoint serves chain {int(str(served), 16)}, not {self._chain_id}"
            )
        self._checked = True

    async def block_number(self) -> int:
        await self._check_chain()
        return int(str(await self._call("eth_blockNumber", [])), 16)

    async def authorization_used(self, authorization: Authorization) -> bool:
        await self._check_chain()
        data = AUTHORIZATION_STATE + topic_address(authorization.payer)[2:] + _nonce(authorization.nonce)[2:]
        result = await self._call("eth_call", [{"to": authorization.asset, "data": data}, "latest"])
        try:
            return int(str(result), 16) != 0
        except ValueError:
            raise ChainUnavailable("eth_call: not a word") from None

    async def _start_block(self, authorization: Authorization) -> int:
        """Where the payment's events can be: from when it was first seen, else a recent window."""
        if authorization.from_block is not None:
            return authorization.from_block
        return max(0, await self.block_number() - LOOKBACK_BLOCKS)

    async def evidence(self, authorization: Authorization) -> Evidence:
        """What the chain shows for this authorisation; ChainUnavailable when it cannot tell."""
        if not await self.authorization_used(authorization):
            return Evidence(used=False)
        logs = await self._call(
            "eth_getLogs",
            [
                {
                    "address": authorization.asset,
                    "topics": [
                        AUTHORIZATION_USED,
                        topic_address(authorization.payer),
                        _nonce(authorization.nonce),
                    ],
                    "fromBlock": hex(await self._start_block(authorization)),
                    "toBlock": "latest",
                }
            ],
        )
        transactions = [
            str(log["transactionHash"])
            for log in logs or ()
            if isinstance(log, dict) and not log.get("removed")
        ]
        if not transactions:
            # Used, but its event is not where we looked: we cannot say who was paid.
            raise ChainUnavailable("the authorisation is used but its event was not found")
        transaction = transactions[0]
        receipt = await self._call("eth_getTransactionReceipt", [transaction])
        if not isinstance(receipt, dict):
            raise ChainUnavailable("eth_getTransactionReceipt: no receipt yet")
        succeeded = str(receipt.get("status", "0x0")) == "0x1"
        if succeeded and any(transfer_matches(log, authorization) for log in receipt.get("logs") or ()):
            return Evidence(used=True, paid_tx=transaction)
        return Evidence(used=True, other_tx=transaction)

    async def aclose(self) -> None:
        await self._client.aclose()
