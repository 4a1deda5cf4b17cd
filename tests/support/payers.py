"""A paying agent for x402 tests: registered through the gateway, signing what its 402 asks for with
the official `x402` client and an `eth_account` wallet, and reading its credits from the database."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import httpx
from eth_account.signers.local import LocalAccount
from x402 import x402ClientSync
from x402.http.x402_http_client import x402HTTPClientSync
from x402.mechanisms.evm.exact.register import register_exact_evm_client
from x402.mechanisms.evm.signers import EthAccountSigner

from server.settings import Settings
from tests.support.db import query

Challenge = Callable[[dict[str, Any]], None]


class Shop(Protocol):
    """Where an agent pays: the gateway's public URL, and its settings (to read its database)."""

    @property
    def base_url(self) -> str: ...

    @property
    def settings(self) -> Settings: ...


class Agent:
    """A registered agent with a wallet, paying through the x402 client."""

    def __init__(self, shop: Shop, wallet: LocalAccount) -> None:
        self.http = httpx.Client(base_url=shop.base_url, timeout=30)
        response = self.http.post("/api/agents/register", json={"agentId": f"payer-{uuid.uuid4().hex[:10]}"})
        if response.status_code != 201:
            self.http.close()
            raise AssertionError(response.text)
        registered = response.json()
        self.key = registered["apiKey"]
        self.account_id = registered["account"]["id"]
        client = x402ClientSync()
        register_exact_evm_client(client, EthAccountSigner(wallet))
        # The tests forge challenges (other assets, amounts): the server, not the client, must refuse them.
        client.set_spend_controls(False)
        self.x402 = x402HTTPClientSync(client)
        self.shop = shop

    def topup(
        self, headers: dict[str, str] | None = None, body: dict[str, Any] | None = None
    ) -> httpx.Response:
        return self.http.post(
            "/api/agents/topup",
            json=body or {},
            headers={"authorization": f"Bearer {self.key}", **(headers or {})},
        )

    def payment(
        self, version: int, change: Challenge | None = None, body: dict[str, Any] | None = None
    ) -> dict[str, str]:
        """Ask, then sign what the 402 asks for (optionally changed first, to forge a mismatch)."""
        challenge = self.topup(body=body)
        assert challenge.status_code == 402, challenge.text
        headers = dict(challenge.headers.items())
        content = challenge.content
        if version == 1:
            headers.pop("payment-required")
            if change:
                data = json.loads(content)
                change(data["accepts"][0])
                content = json.dumps(data).encode()
        elif change:
            data = json.loads(base64.b64decode(headers["payment-required"]))
            change(data["accepts"][0])
            headers["payment-required"] = base64.b64encode(json.dumps(data).encode()).decode()
        payment_headers, _payload = self.x402.handle_402_response(
            headers, content, f"{self.shop.base_url}/api/agents/topup"
        )
        return payment_headers

    def balance(self) -> tuple[int, int]:
        settings = self.shop.settings
        balance = query(settings, "SELECT balance_micro FROM accounts WHERE id = :id", id=self.account_id)[0][
            "balance_micro"
        ]
        ledger = query(
            settings,
            "SELECT COALESCE(SUM(amount_micro), 0) AS total FROM ledger_entries WHERE account_id = :id",
            id=self.account_id,
        )[0]["total"]
        return int(balance), int(ledger)

    def close(self) -> None:
        self.http.close()


def forged(field: str, value: Any) -> Challenge:
    """A change to a challenge's offer: the payer then signs something other than what was offered."""

    def change(offer: dict[str, Any]) -> None:
        offer[field] = value

    return change
