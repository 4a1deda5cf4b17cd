"""A development stand-in for an EVM chain's JSON-RPC, just enough for x402 evidence: the development
facilitator writes each settlement to it as a USDC `transferWithAuthorization` would (an
`AuthorizationUsed` and a `Transfer` event in one successful transaction), and the gateway reads it
back with `eth_chainId`, `eth_blockNumber`, `eth_call` (`authorizationState`), `eth_getLogs` and
`eth_getTransactionReceipt`. In memory; nothing touches a real chain.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from typing import Any

from server.domain.payments.chain import (
    AUTHORIZATION_STATE,
    AUTHORIZATION_USED,
    TRANSFER,
    topic_address,
)

FAKE_TX_PREFIX = "0xdeadbeef"


class NonceUsed(Exception):
    """The authorisation's nonce was used already."""


def _word(nonce: str) -> str:
    return "0x" + nonce.lower().removeprefix("0x").rjust(64, "0")


@dataclass
class DevChain:
    """Blocks, logs and receipts for one chain id."""

    chain_id: int = 84532
    block: int = 1_000
    logs: list[dict[str, Any]] = field(default_factory=list)
    receipts: dict[str, dict[str, Any]] = field(default_factory=dict)
    used: set[tuple[str, str, str]] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)
    #: When set, every RPC answers an error (an endpoint that is down).
    failing: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def transfer_with_authorization(
        self, asset: str, payer: str, to: str, value: int, nonce: str, label: str = ""
    ) -> str:
        """Use the authorisation and move `value` from `payer` to `to`, in one new block."""
        key = (asset.lower(), payer.lower(), _word(nonce))
        with self._lock:
            if key in self.used:
                raise NonceUsed(nonce)
            self.used.add(key)
            self.block += 1
            tx = FAKE_TX_PREFIX + hashlib.sha256(f"{key}:{label}".encode()).hexdigest()[:56]
            logs = [
                self._log(asset, [AUTHORIZATION_USED, topic_address(payer), _word(nonce)], "0x", tx, 0),
                self._log(asset, [TRANSFER, topic_address(payer), topic_address(to)], hex(value), tx, 1),
            ]
            self.logs.extend(logs)
            self.receipts[tx] = {
                "transactionHash": tx,
                "status": "0x1",
                "blockNumber": hex(self.block),
                "logs": logs,
            }
            return tx

    def _log(self, address: str, topics: list[str], data: str, tx: str, index: int) -> dict[str, Any]:
        return {
            "address": address.lower(),
            "topics": topics,
            "data": "0x" + data.removeprefix("0x").rjust(64, "0"),
            "blockNumber": hex(self.block),
            "transactionHash": tx,
            "logIndex": hex(index),
            "removed": False,
        }

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        """One JSON-RPC request's answer."""
        method, params = str(request.get("method")), list(request.get("params") or [])
        self.calls.append(method)
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": request.get("id")}
        if self.failing:
            return {**reply, "error": {"code": -32603, "message": "endpoint down"}}
        with self._lock:
            try:
                return {**reply, "result": self._result(method, params)}
            except (KeyError, ValueError, IndexError, TypeError) as error:
                return {**reply, "error": {"code": -32602, "message": f"invalid params: {error}"}}

    def _result(self, method: str, params: list[Any]) -> Any:
        if method == "eth_chainId":
            return hex(self.chain_id)
        if method == "eth_blockNumber":
            return hex(self.block)
        if method == "eth_call":
            call = params[0]
            data = str(call["data"]).lower()
            if not data.startswith(AUTHORIZATION_STATE):
                raise ValueError("only authorizationState is served")
            payer = "0x" + data[10:74][24:]
            nonce = "0x" + data[74:138]
            used = (str(call["to"]).lower(), payer, nonce) in self.used
            return "0x" + ("1" if used else "0").rjust(64, "0")
        if method == "eth_getLogs":
            query = params[0]
            start = int(str(query.get("fromBlock", "0x0")), 16)
            wanted = [str(topic).lower() if topic else None for topic in query.get("topics") or []]
            return [
                log
                for log in self.logs
                if log["address"] == str(query.get("address", log["address"])).lower()
                and int(log["blockNumber"], 16) >= start
                and all(
                    t is None or (i < len(log["topics"]) and log["topics"][i] == t)
                    for i, t in enumerate(wanted)
                )
            ]
        if method == "eth_getTransactionReceipt":
            return self.receipts.get(str(params[0]))
        raise ValueError(f"method {method} is not served")
