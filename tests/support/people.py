"""A signed-in person talking to the gateway's `/api` with a Supabase token."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import openai

from tests.support.gateway import Gateway
from tests.support.supabase import SupabaseStandIn


@dataclass
class Person:
    """One user: their id, token and an HTTP client that sends it."""

    user_id: str
    token: str
    client: httpx.Client
    gateway: Gateway

    def get(self, path: str) -> httpx.Response:
        return self.client.get(path, headers={"authorization": f"Bearer {self.token}"})

    def post(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return self.client.post(path, json=body or {}, headers={"authorization": f"Bearer {self.token}"})

    def bootstrap(self) -> dict[str, Any]:
        response = self.post("/api/bootstrap-account")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def openai(self, api_key: str) -> openai.OpenAI:
        """An OpenAI client with this key; `close_clients` closes it when the test ends."""
        client = openai.OpenAI(base_url=f"{self.gateway.base_url}/v1", api_key=api_key, max_retries=0)
        OPENED.append(client)
        return client


#: Clients opened through `Person.openai` in the running test. A pooled socket left to the garbage
#: collector warns (an error under `filterwarnings = error`) in whichever later test the collection
#: happens to run, so each test's clients are closed as it ends.
OPENED: list[openai.OpenAI] = []


def close_clients() -> None:
    while OPENED:
        OPENED.pop().close()


def sign_in(gateway: Gateway, supabase: SupabaseStandIn, client: httpx.Client, email: str = "") -> Person:
    """A new user with a valid ES256 token."""
    user_id = str(uuid.uuid4())
    claims = supabase.claims(user_id, email=email or f"{user_id[:8]}@example.com")
    return Person(user_id=user_id, token=supabase.es256(claims), client=client, gateway=gateway)
