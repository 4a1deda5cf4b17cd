"""What the gateway offers in an HTTP 402 challenge, in both x402 protocol versions."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

#: x402 networks: v1 name → (chain id, the network's USDC, its EIP-712 name). USDC has 6 decimals.
NETWORKS: dict[str, tuple[int, str, str]] = {
    "base-sepolia": (84532, "0x036CbD53842c5426634e7929541eC2318f3dCF7e", "USDC"),
    "base": (8453, "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", "USD Coin"),
}
#: Every name a network goes by (x402 v1's and its CAIP-2 id, as v2 names it) → its v1 name.
NETWORK_NAMES: dict[str, str] = {
    **{name: name for name in NETWORKS},
    **{f"eip155:{chain_id}": name for name, (chain_id, _asset, _token) in NETWORKS.items()},
}
TOKEN_VERSION = "2"  # noqa: S105 - USDC's EIP-712 domain version, not a secret
USDC_DECIMALS = 6
MAX_TIMEOUT_SECONDS = 300


def network_name(label: str) -> str:
    """The v1 name of a network named either way (`base-sepolia` or `eip155:84532`); KeyError if unknown."""
    return NETWORK_NAMES[label]


def chain_id_of(label: str) -> int:
    """The EIP-155 chain id of a network named either way; KeyError if unknown."""
    return NETWORKS[network_name(label)][0]


@dataclass(frozen=True)
class Offer:
    """One payment the gateway would accept: this amount, to this address, in this asset."""

    network: str
    asset: str
    pay_to: str
    amount_usd: Decimal
    resource: str
    token_name: str
    token_version: str = TOKEN_VERSION

    @property
    def chain_id(self) -> int:
        return NETWORKS[self.network][0]

    @property
    def caip2(self) -> str:
        """The v2 network id, e.g. `eip155:84532`."""
        return f"eip155:{self.chain_id}"

    @property
    def amount_atomic(self) -> int:
        """The amount in USDC's smallest unit."""
        return int(self.amount_usd * 10**USDC_DECIMALS)

    def extra(self) -> dict[str, str]:
        return {"name": self.token_name, "version": self.token_version}

    def v1_requirements(self) -> dict[str, Any]:
        return {
            "scheme": "exact",
            "network": self.network,
            "maxAmountRequired": str(self.amount_atomic),
            "resource": self.resource,
            "description": f"CrossCompute credits for {self.amount_usd} USD",
            "mimeType": "application/json",
            "payTo": self.pay_to,
            "maxTimeoutSeconds": MAX_TIMEOUT_SECONDS,
            "asset": self.asset,
            "extra": self.extra(),
        }

    def v2_requirements(self) -> dict[str, Any]:
        return {
            "scheme": "exact",
            "network": self.caip2,
            "amount": str(self.amount_atomic),
            "asset": self.asset,
            "payTo": self.pay_to,
            "maxTimeoutSeconds": MAX_TIMEOUT_SECONDS,
            "extra": self.extra(),
        }


def challenge(offer: Offer, error: str) -> tuple[dict[str, Any], str]:
    """The 402 answer: a v1 body, and the v2 `PAYMENT-REQUIRED` header (base64 JSON)."""
    body = {"x402Version": 1, "error": error, "accepts": [offer.v1_requirements()]}
    required = {
        "x402Version": 2,
        "error": error,
        "resource": {
            "url": offer.resource,
            "description": "CrossCompute credits",
            "mimeType": "application/json",
        },
        "accepts": [offer.v2_requirements()],
    }
    header = base64.b64encode(json.dumps(required, separators=(",", ":")).encode()).decode()
    return body, header
