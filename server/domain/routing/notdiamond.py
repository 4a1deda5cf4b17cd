"""NotDiamond's model-select API, under a strict time budget; any failure means "decide locally"."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx

from server.domain.chat.request import text_of

logger = logging.getLogger(__name__)

SELECT_PATH = "/v2/modelRouter/modelSelect"


@dataclass(frozen=True)
class Selection:
    """NotDiamond's choice and its ids."""

    provider: str
    model: str
    session_id: str
    request_id: str


class NotDiamondClient:
    """One pooled client; `select` never raises, it answers None when NotDiamond cannot help in time."""

    def __init__(self, api_key: str, base_url: str, timeout_seconds: float) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"authorization": f"Bearer {api_key}"},
            timeout=httpx.Timeout(timeout_seconds),
        )

    async def select(
        self, messages: list[dict[str, Any]], candidates: list[tuple[str, str]], tradeoff: str | None
    ) -> Selection | None:
        body: dict[str, Any] = {
            "messages": [{"role": m["role"], "content": text_of(m.get("content"))} for m in messages],
            "llm_providers": [{"provider": provider, "model": model} for provider, model in candidates],
        }
        if tradeoff:
            body["tradeoff"] = tradeoff
        try:
            response = await self._client.post(SELECT_PATH, json=body)
            response.raise_for_status()
            answer = response.json()
            choice = answer["providers"][0]
            return Selection(
                provider=str(choice["provider"]),
                model=str(choice["model"]),
                session_id=str(answer.get("session_id") or ""),
                request_id=str(response.headers.get("x-request-id") or answer.get("request_id") or ""),
            )
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as error:
            logger.warning("NotDiamond unavailable, routing locally: %s", type(error).__name__)
            return None

    async def aclose(self) -> None:
        await self._client.aclose()
