"""Agents: self-registration with no human, their account and usage. Top-ups come with x402."""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from datetime import timedelta

from server.db.repositories.accounts import AccountRepository, AccountRow, KeyRow
from server.db.repositories.rate_limits import RateLimitRepository
from server.domain.api_keys import KeyKind, digest, make_key
from server.domain.errors import InvalidArgument, PermissionDenied, RateLimited, Unauthenticated
from server.domain.key_auth import KeyPrincipal

AGENT_ID = re.compile(r"^[A-Za-z0-9._:-]{3,128}$")
MAX_NAME = 120
MAX_URL = 1000
FIRST_KEY_LABEL = "Default"
REGISTRATION_WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class Registration:
    """What registration found or made; `secret` only on creation."""

    created: bool
    account: AccountRow
    key: KeyRow
    name: str
    skill_md_url: str
    secret: str | None


@dataclass(frozen=True)
class AgentView:
    """An agent as it sees itself, with the key it called with."""

    account: AccountRow
    agent_id: str
    name: str
    skill_md_url: str
    key: KeyRow
    request_count: int


def _validate(agent_id: str, name: str, skill_md_url: str) -> None:
    if not AGENT_ID.match(agent_id):
        raise InvalidArgument("agentId must match ^[A-Za-z0-9._:-]{3,128}$", param="agentId")
    if len(name) > MAX_NAME:
        raise InvalidArgument(f"name must be at most {MAX_NAME} characters", param="name")
    if skill_md_url and (len(skill_md_url) > MAX_URL or not re.match(r"^https?://[^\s/]+", skill_md_url)):
        raise InvalidArgument(
            f"skillMdUrl must be an http(s) URL of at most {MAX_URL} characters", param="skillMdUrl"
        )


class AgentAccounts:
    """The operations behind `/api/agents/register`, `/api/agents/me` and `/api/agents/usage`."""

    def __init__(
        self,
        repository: AccountRepository,
        limits: RateLimitRepository,
        *,
        registration_secret: str,
        registrations_per_hour: int,
    ) -> None:
        self._repository = repository
        self._limits = limits
        self._secret = registration_secret
        self._per_hour = registrations_per_hour

    async def register(
        self,
        agent_id: str,
        name: str,
        skill_md_url: str,
        *,
        presented_secret: str | None,
        presented_key: str | None,
        client_address: str,
    ) -> Registration:
        """Create the agent (once), or report it; only its own key may change its name or URL."""
        if self._secret and not hmac.compare_digest((presented_secret or "").encode(), self._secret.encode()):
            raise Unauthenticated(
                "agent registration needs the x-agent-registration-secret header",
                reason="REGISTRATION_SECRET_REQUIRED",
            )
        _validate(agent_id, name, skill_md_url)
        if await self._limits.hit(f"register:{client_address}", REGISTRATION_WINDOW) > self._per_hour:
            raise RateLimited(
                "too many agent registrations from this address; try again later",
                reason="REGISTRATION_RATE_LIMITED",
                headers={"retry-after": str(int(REGISTRATION_WINDOW.total_seconds()))},
            )
        new_key = make_key(KeyKind.AGENT)
        created, account, key = await self._repository.register_agent(
            agent_id, name, skill_md_url, new_key, FIRST_KEY_LABEL
        )
        if created:
            return Registration(True, account, key, name, skill_md_url, new_key.secret)
        if presented_key:
            if not hmac.compare_digest(key.secret_digest, digest(presented_key)):
                raise PermissionDenied("only the agent's own key may update it", reason="NOT_THIS_AGENTS_KEY")
            await self._repository.update_agent(account.id, name or None, skill_md_url or None)
        current_name, current_url = await self._repository.agent_profile(account.id)
        return Registration(False, account, key, current_name, current_url, None)

    @staticmethod
    def require_agent(principal: KeyPrincipal) -> None:
        """Refuse a person's key where an agent's is needed."""
        if principal.kind is not KeyKind.AGENT:
            raise PermissionDenied(
                "this endpoint takes an agent key (cc_agent_...)", reason="NOT_AN_AGENT_KEY"
            )

    async def view(self, principal: KeyPrincipal) -> AgentView:
        """The calling agent's account and key (a person's key is refused)."""
        self.require_agent(principal)
        key = await self._repository.key(principal.key_id)
        account = await self._repository.find_account(account_id=principal.account_id)
        assert key is not None and account is not None
        name, url = await self._repository.agent_profile(account.id)
        count = await self._repository.request_count(key.id)
        return AgentView(account, account.external_id, name, url, key, count)
