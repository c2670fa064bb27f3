"""JWT bearer tokens: verified with PyJWT against the configured allow-list, minted for the CLI."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
from datetime import datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from pydantic import BaseModel

from agent.dto import ID_PATTERN, utcnow
from serve_app.auth.config import HMAC_ALGORITHMS, AuthSettings
from serve_app.auth.errors import UnauthorizedError

logger = logging.getLogger(__name__)

_ID = re.compile(ID_PATTERN)

# Fixed messages by failure: PyJWT's own texts may quote key material (e.g. a bad JWK).
_REASONS: list[tuple[type[Exception], str]] = [
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidAudienceError, "token audience not accepted"),
    (jwt.InvalidIssuerError, "token issuer not accepted"),
    (jwt.MissingRequiredClaimError, "token lacks a required claim"),
    (jwt.InvalidAlgorithmError, "token algorithm not accepted"),
    (jwt.InvalidSignatureError, "token signature invalid"),
]


class VerifiedToken(BaseModel):
    subject: str
    scopes: frozenset[str]
    claims: dict[str, Any]


def scopes_from(claims: dict[str, Any]) -> frozenset[str]:
    """Scopes of the ``scope`` claim (space-separated, OAuth 2) and/or ``scopes`` (a list or a string)."""
    found: set[str] = set()
    for name in ("scope", "scopes"):
        value = claims.get(name)
        if isinstance(value, str):
            found.update(value.replace(",", " ").split())
        elif isinstance(value, list):
            found.update(v for v in value if isinstance(v, str))
    return frozenset(found)


def _fits(key: Any, algorithm: str) -> bool:
    try:
        jwt.get_algorithm_by_name(algorithm).prepare_key(key)
    except (jwt.PyJWTError, TypeError, ValueError):
        return False
    return True


class JwtVerifier:
    """Verifies bearer tokens; built once per replica from ``AuthSettings``.

    The accepted algorithms are the configured allow-list only; a token's
    ``alg`` header merely selects among them, so ``alg: none`` and an HS256
    token "signed" with our public key are both refused.

    Raises:
        ValueError: the public key or JWKS file cannot be used with the allow-list.
    """

    def __init__(self, settings: AuthSettings) -> None:
        self.algorithms = list(settings.jwt_algorithms)
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._leeway = settings.jwt_leeway_s
        self._key: Any = None
        self._jwks_path = settings.jwt_jwks_file
        self._jwks: dict[str, tuple[str | None, Any]] = {}
        self._jwks_mtime: float | None = None
        if settings.uses_hmac:
            secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else ""
            self._key = secret.encode() or None  # None: every token is refused
        elif settings.jwt_public_key:
            self._key = self._load_public_key(settings.jwt_public_key)
        elif self._jwks_path:
            self._load_jwks()

    @property
    def configured(self) -> bool:
        return self._key is not None or bool(self._jwks)

    def _load_public_key(self, pem: str) -> Any:
        try:
            key = serialization.load_pem_public_key(pem.encode())
        except (ValueError, TypeError) as exc:
            raise ValueError("JWT_PUBLIC_KEY is not a PEM public key (give the public half only)") from exc
        if not any(_fits(key, a) for a in self.algorithms):
            raise ValueError(f"JWT_PUBLIC_KEY does not fit JWT_ALGORITHMS {self.algorithms}")
        return key

    def _load_jwks(self) -> None:
        """Read the JWKS file: kid -> (the JWK's own ``alg`` or None, the public key)."""
        assert self._jwks_path is not None
        mtime = os.stat(self._jwks_path).st_mtime
        with open(self._jwks_path, encoding="utf-8") as f:
            document = json.load(f)
        keys: dict[str, tuple[str | None, Any]] = {}
        for jwk in document.get("keys", []) if isinstance(document, dict) else []:
            kid, alg = jwk.get("kid"), jwk.get("alg")
            if not isinstance(kid, str) or jwk.get("use", "sig") != "sig" or jwk.get("kty") == "oct":
                continue
            if alg is not None and alg not in self.algorithms:
                continue
            try:
                key = jwt.PyJWK(jwk).key
            except jwt.PyJWTError:
                logger.warning("JWKS file: skipping key %r (unusable)", kid)
                continue
            if any(_fits(key, a) for a in self.algorithms):
                keys[kid] = (alg, key)
        if not keys:
            raise ValueError(f"JWT_JWKS_FILE has no signing key with a kid that fits {self.algorithms}")
        self._jwks, self._jwks_mtime = keys, mtime

    def _reload_if_changed(self) -> None:
        # NOTE: an unknown kid may mean the keys were rotated (a mounted Secret updates in place).
        try:
            if self._jwks_path and os.stat(self._jwks_path).st_mtime != self._jwks_mtime:
                self._load_jwks()
                logger.info("JWKS file reloaded: %d keys", len(self._jwks))
        except (OSError, ValueError) as exc:
            logger.warning("JWKS file reload failed, keeping the old keys: %s", type(exc).__name__)

    def _key_for(self, header: dict[str, Any]) -> Any:
        if not self._jwks_path:
            if self._key is None:
                raise UnauthorizedError("bearer tokens are not accepted: JWT verification is not configured")
            return self._key
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise UnauthorizedError("token has no key id (kid)")
        if kid not in self._jwks:
            self._reload_if_changed()
        if kid not in self._jwks:
            raise UnauthorizedError("token key id unknown")
        alg, key = self._jwks[kid]
        if alg is not None and header.get("alg") != alg:
            raise UnauthorizedError("token algorithm not accepted")
        return key

    def verify(self, token: str) -> VerifiedToken:
        """The token's subject, scopes and claims.

        Raises:
            UnauthorizedError: the token is malformed, unsigned, signed with an
                algorithm or key we do not accept, expired, not yet valid, for
                another issuer or audience, or lacks ``exp``/``sub``.
        """
        try:
            key = self._key_for(jwt.get_unverified_header(token))
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                options={"require": ["exp", "sub"]},
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
            )
        except (jwt.PyJWTError, TypeError, ValueError) as exc:
            reason = next((msg for cls, msg in _REASONS if isinstance(exc, cls)), "invalid token")
            logger.debug("bearer token refused: %s", type(exc).__name__)
            raise UnauthorizedError(reason) from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not _ID.match(subject):
            raise UnauthorizedError("token subject is not a valid principal id (must match " + ID_PATTERN + ")")
        return VerifiedToken(subject=subject, scopes=scopes_from(claims), claims=claims)


def mint_token(
    sub: str,
    scopes: list[str],
    ttl_s: int,
    settings: AuthSettings,
    *,
    private_key_pem: str | None = None,
    kid: str | None = None,
    now: datetime | None = None,
) -> str:
    """A signed token for ``sub`` with the first algorithm of the allow-list.

    Args:
        sub: The principal id (the user sessions and memories belong to).
        scopes: Put in the ``scope`` claim, space-separated.
        ttl_s: Seconds until ``exp``.
        settings: The algorithm, HMAC secret, issuer and audience.
        private_key_pem: The signing key for RS/PS/ES/EdDSA algorithms.
        kid: The key id header, for verifiers that pick keys from a JWKS.
        now: The issue time (tests).

    Raises:
        ValueError: the key for the algorithm is missing, ``sub`` is no valid id, or ``ttl_s``
            is not positive (the token would be born expired).
    """
    if not _ID.match(sub):
        raise ValueError(f"sub must match {ID_PATTERN}")
    if ttl_s <= 0:
        raise ValueError(f"ttl must be a positive number of seconds, not {ttl_s}")
    algorithm = settings.jwt_algorithms[0]
    key: Any
    if algorithm in HMAC_ALGORITHMS:
        if settings.jwt_secret is None or not settings.jwt_secret.get_secret_value():
            raise ValueError(f"{algorithm} tokens need JWT_SECRET")
        key = settings.jwt_secret.get_secret_value()
    elif private_key_pem:
        key = private_key_pem
    else:
        raise ValueError(f"{algorithm} tokens need a private key (--private-key PATH)")
    issued = now or utcnow()
    claims: dict[str, Any] = {
        "sub": sub,
        "scope": " ".join(sorted(set(scopes))),
        "iat": issued,
        "nbf": issued,
        "exp": issued + timedelta(seconds=ttl_s),
        "jti": secrets.token_urlsafe(12),
    }
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid} if kid else None)
