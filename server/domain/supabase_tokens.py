"""Verifying Supabase access tokens: ES256/RS256 against the project's JWKS, or HS256 with the
legacy JWT secret. Every failure is `Unauthenticated` with a reason that helps, and never the token."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from server.domain.errors import ServiceUnavailable, Unauthenticated

logger = logging.getLogger(__name__)

AUDIENCE = "authenticated"
LEEWAY_SECONDS = 30
JWKS_CACHE_SECONDS = 600
ASYMMETRIC = frozenset({"ES256", "RS256"})


@dataclass(frozen=True)
class SignedInUser:
    """The person a valid token names."""

    id: str
    email: str


class JwksCache:
    """The project's signing keys, fetched with httpx and kept for ten minutes. An unknown `kid`
    refetches at most once per `min_refresh_seconds` (so random kids cannot hammer Supabase)."""

    def __init__(self, url: str, *, min_refresh_seconds: float, client: httpx.AsyncClient) -> None:
        self._url = url
        self._min_refresh = min_refresh_seconds
        self._client = client
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> jwt.PyJWK:
        """The signing key `kid`, refetching the set when it is stale or the kid is new."""
        now = time.monotonic()
        if kid in self._keys and now - self._fetched_at < JWKS_CACHE_SECONDS:
            return self._keys[kid]
        async with self._lock:
            stale = time.monotonic() - self._fetched_at >= JWKS_CACHE_SECONDS
            may_refresh = time.monotonic() - self._fetched_at >= self._min_refresh
            if (kid not in self._keys and may_refresh) or stale:
                await self._fetch()
        if kid not in self._keys:
            raise Unauthenticated("the token was signed with an unknown key", reason="UNKNOWN_SIGNING_KEY")
        return self._keys[kid]

    async def _fetch(self) -> None:
        try:
            response = await self._client.get(self._url)
            response.raise_for_status()
            keys = jwt.PyJWKSet.from_dict(response.json())
        except (httpx.HTTPError, ValueError, jwt.PyJWKSetError) as error:
            logger.warning("could not fetch the Supabase JWKS: %s", type(error).__name__)
            if self._keys:
                return  # keep verifying with the keys we have
            raise ServiceUnavailable(
                "sign-in cannot be verified right now (the signing keys are unreachable)",
                reason="JWKS_UNAVAILABLE",
            ) from None
        self._keys = {key.key_id: key for key in keys.keys if key.key_id}
        self._fetched_at = time.monotonic()


class SupabaseTokenVerifier:
    """Checks signature, `exp` (with leeway), `aud`, `iss` (when the URL is known), `sub` and role."""

    def __init__(
        self,
        *,
        supabase_url: str,
        jwt_secret: str,
        min_refresh_seconds: float,
        client: httpx.AsyncClient,
    ) -> None:
        base = supabase_url.rstrip("/")
        self._issuer = f"{base}/auth/v1" if base else None
        self._secret = jwt_secret
        self._jwks = (
            JwksCache(
                f"{base}/auth/v1/.well-known/jwks.json",
                min_refresh_seconds=min_refresh_seconds,
                client=client,
            )
            if base
            else None
        )

    @property
    def configured(self) -> bool:
        """Whether any way of verifying tokens is configured."""
        return self._jwks is not None or bool(self._secret)

    async def verify(self, token: str) -> SignedInUser:
        """The user a token names; raises `Unauthenticated` (or `ServiceUnavailable`) otherwise."""
        if not self.configured:
            raise ServiceUnavailable(
                "sign-in is not configured on this gateway", reason="SIGN_IN_NOT_CONFIGURED"
            )
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthenticated("the access token is malformed", reason="MALFORMED_TOKEN") from None
        algorithm = header.get("alg")
        key = await self._key_for(algorithm, header.get("kid"))
        claims = self._decode(token, key, str(algorithm))
        if claims.get("role") != AUDIENCE:
            raise Unauthenticated("anonymous (anon-role) tokens cannot sign in", reason="ANON_TOKEN")
        return SignedInUser(id=str(claims["sub"]), email=str(claims.get("email") or ""))

    async def _key_for(self, algorithm: Any, kid: Any) -> Any:
        if algorithm == "HS256":
            if not self._secret:
                raise Unauthenticated("HS256 tokens are not accepted here", reason="UNSUPPORTED_ALGORITHM")
            return self._secret
        if algorithm in ASYMMETRIC:
            if self._jwks is None:
                raise Unauthenticated(f"{algorithm} tokens need SUPABASE_URL", reason="UNSUPPORTED_ALGORITHM")
            if not isinstance(kid, str) or not kid:
                raise Unauthenticated("the token names no signing key (kid)", reason="UNKNOWN_SIGNING_KEY")
            return await self._jwks.key(kid)
        raise Unauthenticated("the token's signing algorithm is not accepted", reason="UNSUPPORTED_ALGORITHM")

    def _decode(self, token: str, key: Any, algorithm: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=AUDIENCE,
                issuer=self._issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the access token has expired", reason="TOKEN_EXPIRED") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated(
                "the access token is for another audience", reason="INVALID_AUDIENCE"
            ) from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated(
                "the access token is from another issuer", reason="INVALID_ISSUER"
            ) from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated(
                "the access token's signature is not valid", reason="INVALID_SIGNATURE"
            ) from None
        except jwt.MissingRequiredClaimError as error:
            raise Unauthenticated(
                f"the access token lacks the {error.claim} claim", reason="MISSING_CLAIM"
            ) from None
        except jwt.InvalidTokenError:
            raise Unauthenticated("the access token is not valid", reason="INVALID_TOKEN") from None
        return claims
