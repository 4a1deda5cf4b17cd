"""A stand-in for Supabase Auth's public side: a JWKS served over HTTP, and tokens minted like
Supabase mints them (ES256 with a `kid`, or HS256 with the legacy JWT secret).

For the dashboard's browser tests it also answers what supabase-js asks a project, with CORS as
Supabase does: the public settings (`/auth/v1/settings`: which sign-in providers are on), a magic
link request (`/auth/v1/otp`, recorded, nothing sent), a refresh of a session it minted
(`/auth/v1/token?grant_type=refresh_token`) and sign-out (`/auth/v1/logout`).
Every path a browser asked for is recorded in `requests`."""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

JWT_SECRET = "legacy-hs256-jwt-secret-for-tests-0123456789abcdef"
JWKS_PATH = "/auth/v1/.well-known/jwks.json"
SETTINGS_PATH = "/auth/v1/settings"
CORS_HEADERS = {
    "access-control-allow-origin": "*",
    "access-control-allow-methods": "GET, POST, OPTIONS",
    "access-control-allow-headers": (
        "apikey, authorization, content-type, x-client-info, x-supabase-api-version"
    ),
    "access-control-max-age": "600",
}


@dataclass
class SigningKey:
    """An ES256 (or RS256) key pair with its key id."""

    algorithm: str = "ES256"
    kid: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = field(init=False)

    def __post_init__(self) -> None:
        if self.algorithm == "RS256":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())

    def public_jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        text = (
            jwt.algorithms.RSAAlgorithm.to_jwk(public)
            if isinstance(public, rsa.RSAPublicKey)
            else jwt.algorithms.ECAlgorithm.to_jwk(public)
        )
        return {**json.loads(text), "kid": self.kid, "alg": self.algorithm, "use": "sig"}


class SupabaseStandIn:
    """Serves `GET /auth/v1/.well-known/jwks.json` with the keys it holds; counts fetches."""

    def __init__(self) -> None:
        self.keys: list[SigningKey] = [SigningKey(), SigningKey("RS256")]
        self.fetches = 0
        self.failing = False
        #: The project's public settings: which external sign-in providers are switched on.
        self.external_providers: dict[str, bool] = {"email": True, "github": True, "google": False}
        #: Addresses a magic link was asked for.
        self.magic_links: list[str] = []
        #: "METHOD path" of every request, in order.
        self.requests: list[str] = []
        #: refresh token → the claims of the session it renews.
        self._refresh_tokens: dict[str, dict[str, Any]] = {}
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def issuer(self) -> str:
        return f"{self.url}/auth/v1"

    @contextmanager
    def running(self) -> Iterator[SupabaseStandIn]:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True

            def send_json(self, status: int, body: object | None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                for name, value in CORS_HEADERS.items():
                    self.send_header(name, value)
                if body is not None:
                    self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_OPTIONS(self) -> None:
                stand_in.requests.append(f"OPTIONS {self.path}")
                self.send_json(204, None)

            def do_GET(self) -> None:
                stand_in.requests.append(f"GET {self.path}")
                if self.path == SETTINGS_PATH:
                    self.send_json(200, {"external": stand_in.external_providers, "disable_signup": False})
                    return
                stand_in.fetches += 1
                if self.path != JWKS_PATH or stand_in.failing:
                    self.send_error(503 if stand_in.failing else 404)
                    return
                self.send_json(200, {"keys": [key.public_jwk() for key in stand_in.keys]})

            def do_POST(self) -> None:
                stand_in.requests.append(f"POST {self.path}")
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path.startswith("/auth/v1/logout"):
                    self.send_json(204, None)
                elif self.path.startswith("/auth/v1/otp"):  # a magic link "sent"
                    stand_in.magic_links.append(str(body.get("email")))
                    self.send_json(200, {})
                elif self.path == "/auth/v1/token?grant_type=refresh_token":
                    claims = stand_in._refresh_tokens.pop(str(body.get("refresh_token")), None)
                    if claims is None:
                        self.send_json(
                            400, {"error": "invalid_grant", "error_description": "Invalid Refresh Token"}
                        )
                    else:
                        self.send_json(200, stand_in.session(claims["sub"], claims.get("email", "")))
                else:
                    self.send_json(404, {"error": "not_found"})

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join(10)

    def claims(self, user_id: str | None = None, **overrides: Any) -> dict[str, Any]:
        """Claims like Supabase's for a signed-in user, with `overrides` applied (None removes)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": "authenticated",
            "exp": now + 3600,
            "iat": now,
            "sub": user_id or str(uuid.uuid4()),
            "role": "authenticated",
            "email": "person@example.com",
            "session_id": str(uuid.uuid4()),
            "is_anonymous": False,
            "app_metadata": {"provider": "email"},
            "user_metadata": {},
        }
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def session(self, user_id: str, email: str, lifetime_seconds: int = 3600) -> dict[str, Any]:
        """A session as supabase-js stores it (and as `/auth/v1/token` answers), with a fresh ES256
        access token and a refresh token this stand-in will honour once."""
        claims = self.claims(user_id, email=email, exp=int(time.time()) + lifetime_seconds)
        refresh_token = secrets.token_urlsafe(16)
        self._refresh_tokens[refresh_token] = claims
        return {
            "access_token": self.es256(claims),
            "token_type": "bearer",
            "expires_in": lifetime_seconds,
            "expires_at": claims["exp"],
            "refresh_token": refresh_token,
            "user": {
                "id": user_id,
                "aud": "authenticated",
                "role": "authenticated",
                "email": email,
                "app_metadata": claims["app_metadata"],
                "user_metadata": {},
                "created_at": "2026-01-01T00:00:00Z",
            },
        }

    def es256(self, claims: dict[str, Any], key: SigningKey | None = None) -> str:
        key = key or self.keys[0]
        return jwt.encode(claims, key.private, algorithm=key.algorithm, headers={"kid": key.kid})

    def rs256(self, claims: dict[str, Any]) -> str:
        return self.es256(claims, key=next(key for key in self.keys if key.algorithm == "RS256"))

    def hs256(self, claims: dict[str, Any], secret: str = JWT_SECRET) -> str:
        return jwt.encode(claims, secret, algorithm="HS256")
