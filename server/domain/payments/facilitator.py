"""Talking to an x402 facilitator: `POST /verify` and `POST /settle`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


class FacilitatorUnavailable(Exception):
    """The facilitator could not be reached, timed out, or answered with something unusable.

    `sent` is False only when the request certainly never reached it (no connection was made): then
    a settle cannot have happened. Otherwise what the facilitator did is not known."""

    def __init__(self, what: str, *, sent: bool) -> None:
        super().__init__(what)
        self.sent = sent


@dataclass(frozen=True)
class Settlement:
    """The facilitator's settle answer."""

    success: bool
    transaction: str
    payer: str
    reason: str


class FacilitatorClient:
    """One pooled httpx client to the configured facilitator."""

    def __init__(self, base_url: str, timeout_seconds: float) -> None:
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout_seconds)

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self._client.post(path, json=body)
            response.raise_for_status()
            answer = response.json()
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
            raise FacilitatorUnavailable(type(error).__name__, sent=False) from None
        except httpx.HTTPStatusError as error:
            raise FacilitatorUnavailable(f"HTTP {error.response.status_code}", sent=True) from None
        except (httpx.HTTPError, ValueError) as error:
            raise FacilitatorUnavailable(type(error).__name__, sent=True) from None
        if not isinstance(answer, dict):
            raise FacilitatorUnavailable("not a JSON object", sent=True)
        return answer

    async def verify(
        self, version: int, payload: dict[str, Any], requirements: dict[str, Any]
    ) -> tuple[bool, str]:
        answer = await self._post(
            "/verify",
            {"x402Version": version, "paymentPayload": payload, "paymentRequirements": requirements},
        )
        return bool(answer.get("isValid")), str(answer.get("invalidReason") or "")

    async def settle(self, version: int, payload: dict[str, Any], requirements: dict[str, Any]) -> Settlement:
        answer = await self._post(
            "/settle",
            {"x402Version": version, "paymentPayload": payload, "paymentRequirements": requirements},
        )
        return Settlement(
            success=bool(answer.get("success")),
            transaction=str(answer.get("transaction") or ""),
            payer=str(answer.get("payer") or ""),
            reason=str(answer.get("errorReason") or ""),
        )

    async def aclose(self) -> None:
        await self._client.aclose()
