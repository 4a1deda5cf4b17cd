"""API key secrets: how they are made, shown, recognised and stored.

A key is its kind's prefix (`cc_live_` for people, `cc_agent_` for agents) and 43 characters of
URL-safe base64 carrying 32 random bytes. Only its SHA-256 digest is stored: with 256 bits of
randomness no dictionary or brute force reverses it, so a slow password hash would only add latency
to every request. The first characters are kept as a prefix so people can tell their keys apart.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass


class KeyKind(enum.Enum):
    """Who a key belongs to, by its prefix."""

    LIVE = "cc_live_"
    AGENT = "cc_agent_"


SECRET_BYTES = 32
#: Characters of the random part shown in listings (about 48 bits: recognisable, useless to guess).
VISIBLE_CHARACTERS = 8
_SHAPE = re.compile(r"^(cc_live_|cc_agent_)[A-Za-z0-9_-]{43}$")


@dataclass(frozen=True)
class NewKey:
    """A freshly made key: the secret (shown once), its prefix and its digest."""

    secret: str
    prefix: str
    digest: str
    kind: KeyKind


def make_key(kind: KeyKind) -> NewKey:
    """A new random key of `kind`."""
    secret = kind.value + secrets.token_urlsafe(SECRET_BYTES)
    return NewKey(secret=secret, prefix=visible_prefix(secret), digest=digest(secret), kind=kind)


def visible_prefix(secret: str) -> str:
    """The part of a key that may be shown again: its kind and first characters."""
    kind = KeyKind.AGENT if secret.startswith(KeyKind.AGENT.value) else KeyKind.LIVE
    return secret[: len(kind.value) + VISIBLE_CHARACTERS]


def digest(secret: str) -> str:
    """The stored form of a key: SHA-256, hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


def looks_like_key(candidate: str) -> bool:
    """Whether `candidate` has the shape of one of our keys (checked before any lookup)."""
    return bool(_SHAPE.match(candidate))


def digests_match(stored: str, candidate_secret: str) -> bool:
    """Compare a stored digest with a presented key in constant time."""
    return hmac.compare_digest(stored, digest(candidate_secret))
