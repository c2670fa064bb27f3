"""Settings and keys for the auth tests, independent of the environment and any .env file."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from serve_app.auth.config import AuthSettings

SECRET = "k3y-for-tests-0123456789abcdef-0123456789abcdef-0123456789abcdef"  # 64 bytes, no placeholder


def make_settings(**overrides: Any) -> AuthSettings:
    """AuthSettings with every field given, so no environment variable or .env leaks in."""
    fields: dict[str, Any] = {
        "agentserve_env": "development",
        "auth_mode": "required",
        "jwt_algorithms": ["HS256"],
        "jwt_secret": SECRET,
        "jwt_public_key": None,
        "jwt_jwks_file": None,
        "jwt_issuer": None,
        "jwt_audience": None,
        "jwt_leeway_s": 30,
        "tool_scopes": {"http_get": "tools:http_get"},
    }
    fields.update(overrides)
    return AuthSettings(_env_file=None, **fields)


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def private_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge_token(header: dict[str, Any], payload: dict[str, Any], hmac_secret: bytes | None) -> str:
    """A token built by hand, as an attacker would: HMAC-signed with any bytes, or unsigned."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    if hmac_secret is None:
        return signing_input + "."
    signature = hmac.new(hmac_secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"
