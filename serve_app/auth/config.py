"""Authentication settings from the environment, refused when unsafe for production."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
MIN_SECRET_BYTES = 32
PLACEHOLDER_SECRETS = frozenset(
    {"change-me", "changeme", "change_me", "changethis", "change-this", "secret", "jwt-secret", "password", "test"}
)


# A tool the tool-scope map names needs that scope, besides the route's own (chat, tools:execute).
DEFAULT_TOOL_SCOPES = {"http_get": "tools:http_get"}
TOOL_SCOPE = re.compile(r"^tools:[A-Za-z0-9_-]{1,64}$")
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_KNOWN_SCOPES = frozenset({"chat", "tools:execute", "memory", "admin"})


def is_placeholder(secret: str) -> bool:
    return secret.strip().lower() in PLACEHOLDER_SECRETS


class AuthSettings(BaseSettings):
    """How callers prove who they are; read once per Ingress replica.

    ``AUTH_MODE=disabled`` is for development only: every request is then
    trusted as its ``user_id``. ``JWT_ALGORITHMS`` is the allow-list a token's
    ``alg`` header must be in; it is never taken from the token. HMAC (HS*)
    algorithms verify with ``JWT_SECRET``; RS/PS/ES/EdDSA ones with
    ``JWT_PUBLIC_KEY`` (PEM) or ``JWT_JWKS_FILE`` (a JWKS document, keys
    picked by ``kid``). The two families never mix: a public key used as an
    HMAC secret is the classic algorithm-confusion attack.
    """

    # NOTE: hide_input_in_errors keeps JWT_SECRET out of the validation error a refused start prints.
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", hide_input_in_errors=True
    )

    agentserve_env: Literal["development", "production"] = "development"
    auth_mode: Literal["required", "disabled"] = "required"
    jwt_algorithms: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["HS256"])
    jwt_secret: SecretStr | None = None
    jwt_public_key: str | None = None
    jwt_jwks_file: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_s: float = Field(default=30.0, ge=0, le=300)
    tool_scopes: Annotated[dict[str, str], NoDecode] = Field(default_factory=lambda: dict(DEFAULT_TOOL_SCOPES))

    @field_validator("tool_scopes", mode="before")
    @classmethod
    def _parse_tool_scopes(cls, value: Any) -> Any:
        """``TOOL_SCOPES=http_get=tools:http_get,calculator=tools:calc`` or a JSON object; empty: none."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("{"):
                return json.loads(text)
            pairs = [p.strip().partition("=") for p in text.split(",") if p.strip()]
            bad = [name for name, sep, scope in pairs if not sep or not scope.strip()]
            if bad:
                raise ValueError(f"TOOL_SCOPES: write tool=scope pairs, comma-separated (not {bad[0]!r})")
            return {name.strip(): scope.strip() for name, _, scope in pairs}
        return value

    @field_validator("tool_scopes")
    @classmethod
    def _valid_tool_scopes(cls, value: dict[str, str]) -> dict[str, str]:
        for name, scope in value.items():
            if not _TOOL_NAME.match(name):
                raise ValueError(f"TOOL_SCOPES: {name!r} is not a tool name")
            if scope not in _KNOWN_SCOPES and not TOOL_SCOPE.match(scope):
                raise ValueError(f"TOOL_SCOPES: {name}={scope!r}: the scope must be tools:<name> or a known scope")
        return value

    @field_validator("jwt_algorithms", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        """``RS256,ES256`` or ``["RS256", "ES256"]`` from the environment."""
        if isinstance(value, str):
            text = value.strip()
            return json.loads(text) if text.startswith("[") else [p.strip() for p in text.split(",") if p.strip()]
        return value

    @field_validator("jwt_algorithms")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("JWT_ALGORITHMS must name at least one algorithm")
        unknown = [a for a in value if a not in HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS]
        if unknown:
            raise ValueError(f"JWT_ALGORITHMS: unsupported {unknown} ('none' is never allowed)")
        return list(dict.fromkeys(value))

    @field_validator("jwt_public_key")
    @classmethod
    def _pem_newlines(cls, value: str | None) -> str | None:
        """A PEM put in one environment line with ``\\n`` escapes gets its newlines back."""
        return value.replace("\\n", "\n").strip() if value else None

    @property
    def uses_hmac(self) -> bool:
        return bool(set(self.jwt_algorithms) & HMAC_ALGORITHMS)

    @property
    def disabled(self) -> bool:
        return self.auth_mode == "disabled"

    def weak_secret_reason(self) -> str | None:
        """Why ``JWT_SECRET`` is unfit for HMAC tokens (missing, placeholder, short); None when fit."""
        if self.jwt_secret is None or not self.jwt_secret.get_secret_value():
            return "JWT_SECRET is not set"
        secret = self.jwt_secret.get_secret_value()
        if is_placeholder(secret):
            return "JWT_SECRET is a placeholder value"
        if len(secret.encode()) < MIN_SECRET_BYTES:
            return f"JWT_SECRET is shorter than {MIN_SECRET_BYTES} bytes"
        return None

    @model_validator(mode="after")
    def _consistent(self) -> AuthSettings:
        algorithms = set(self.jwt_algorithms)
        if algorithms & HMAC_ALGORITHMS and algorithms & ASYMMETRIC_ALGORITHMS:
            raise ValueError(
                "JWT_ALGORITHMS mixes HMAC (HS*) with public-key algorithms; a public key would then "
                "verify as an HMAC secret (algorithm confusion). Pick one family."
            )
        if self.jwt_public_key and self.jwt_jwks_file:
            raise ValueError("set JWT_PUBLIC_KEY or JWT_JWKS_FILE, not both")
        if self.uses_hmac and (self.jwt_public_key or self.jwt_jwks_file):
            raise ValueError("JWT_PUBLIC_KEY and JWT_JWKS_FILE are for RS/PS/ES/EdDSA algorithms, not HS*")
        if not self.uses_hmac and not (self.jwt_public_key or self.jwt_jwks_file):
            raise ValueError(f"JWT_ALGORITHMS {self.jwt_algorithms} needs JWT_PUBLIC_KEY or JWT_JWKS_FILE")
        if self.agentserve_env == "production":
            if self.disabled:
                raise ValueError("AUTH_MODE=disabled is for development only; refusing to start in production")
            reason = self.weak_secret_reason() if self.uses_hmac else None
            if reason is not None:
                raise ValueError(f"{reason}; production needs a random secret of {MIN_SECRET_BYTES}+ bytes")
        return self
