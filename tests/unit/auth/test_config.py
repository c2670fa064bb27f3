"""AuthSettings: safe defaults, production refusals, no algorithm confusion, logging of the mode."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from serve_app.auth.config import AuthSettings
from serve_app.auth.deps import log_auth_mode
from tests.unit.auth.support import SECRET, ec_key, make_settings, public_pem

AUTH_ENV = [
    "AGENTSERVE_ENV",
    "AUTH_MODE",
    "JWT_ALGORITHMS",
    "JWT_SECRET",
    "JWT_PUBLIC_KEY",
    "JWT_JWKS_FILE",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "JWT_LEEWAY_S",
    "TOOL_SCOPES",
]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No auth variable set and no .env file in the working directory."""
    for name in AUTH_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_defaults_require_auth_with_hs256(clean_env: pytest.MonkeyPatch) -> None:
    settings = AuthSettings()
    assert settings.auth_mode == "required" and not settings.disabled
    assert settings.jwt_algorithms == ["HS256"] and settings.jwt_leeway_s == 30
    assert settings.agentserve_env == "development"


def test_settings_come_from_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("JWT_ALGORITHMS", "ES256, ES384")
    clean_env.setenv("JWT_PUBLIC_KEY", public_pem(ec_key()).replace("\n", "\\n"))
    clean_env.setenv("JWT_ISSUER", "https://idp.example")
    clean_env.setenv("JWT_LEEWAY_S", "5")
    settings = AuthSettings()
    assert settings.jwt_algorithms == ["ES256", "ES384"] and settings.jwt_leeway_s == 5
    assert settings.jwt_public_key is not None and settings.jwt_public_key.startswith("-----BEGIN PUBLIC KEY-----\n")
    clean_env.setenv("JWT_ALGORITHMS", '["ES256"]')
    assert AuthSettings().jwt_algorithms == ["ES256"]


def test_production_refuses_disabled_auth() -> None:
    with pytest.raises(ValidationError, match="development only"):
        make_settings(agentserve_env="production", auth_mode="disabled")
    assert make_settings(agentserve_env="development", auth_mode="disabled").disabled


@pytest.mark.parametrize("secret", ["change-me", "changeme", "secret", "CHANGEME", " changethis "])
def test_production_refuses_placeholder_secrets(secret: str) -> None:
    with pytest.raises(ValidationError, match="placeholder"):
        make_settings(agentserve_env="production", jwt_secret=secret)


def test_production_refuses_a_missing_or_short_secret() -> None:
    with pytest.raises(ValidationError, match="not set"):
        make_settings(agentserve_env="production", jwt_secret=None)
    with pytest.raises(ValidationError, match="not set"):
        make_settings(agentserve_env="production", jwt_secret="")
    with pytest.raises(ValidationError, match="shorter than 32 bytes"):
        make_settings(agentserve_env="production", jwt_secret="x" * 31)
    assert make_settings(agentserve_env="production", jwt_secret="x" * 32).jwt_secret is not None


def test_production_with_a_public_key_needs_no_secret() -> None:
    settings = make_settings(
        agentserve_env="production", jwt_algorithms=["ES256"], jwt_secret=None, jwt_public_key=public_pem(ec_key())
    )
    assert not settings.uses_hmac


def test_development_accepts_a_placeholder_but_says_so(caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(jwt_secret="change-me")
    with caplog.at_level(logging.INFO, logger="serve_app.auth.deps"):
        log_auth_mode(settings)
    assert any(r.levelno == logging.WARNING and "placeholder" in r.getMessage() for r in caplog.records)


def test_refusals_never_show_the_secret() -> None:
    secret = "short-but-secret-value"
    with pytest.raises(ValidationError) as info:
        make_settings(agentserve_env="production", jwt_secret=secret)
    assert secret not in str(info.value) and secret not in repr(info.value)  # what a refused start prints


def test_hs_and_rs_algorithms_never_mix() -> None:
    with pytest.raises(ValidationError, match="algorithm confusion"):
        make_settings(jwt_algorithms=["HS256", "RS256"], jwt_public_key=public_pem(ec_key()))
    with pytest.raises(ValidationError, match="algorithm confusion"):
        make_settings(jwt_algorithms=["ES256", "HS512"])


@pytest.mark.parametrize("algorithms", [["none"], ["HS256", "none"], ["XS256"], []])
def test_unknown_algorithms_and_none_are_refused(algorithms: list[str]) -> None:
    with pytest.raises(ValidationError, match="JWT_ALGORITHMS"):
        make_settings(jwt_algorithms=algorithms)


def test_key_settings_must_match_the_algorithms(tmp_path: Path) -> None:
    pem = public_pem(ec_key())
    with pytest.raises(ValidationError, match="needs JWT_PUBLIC_KEY or JWT_JWKS_FILE"):
        make_settings(jwt_algorithms=["RS256"], jwt_secret=None)
    with pytest.raises(ValidationError, match="not both"):
        make_settings(jwt_algorithms=["ES256"], jwt_public_key=pem, jwt_jwks_file=str(tmp_path / "jwks.json"))
    with pytest.raises(ValidationError, match="not HS"):
        make_settings(jwt_algorithms=["HS256"], jwt_public_key=pem)


def test_leeway_is_bounded() -> None:
    with pytest.raises(ValidationError):
        make_settings(jwt_leeway_s=-1)
    with pytest.raises(ValidationError):
        make_settings(jwt_leeway_s=3600)


def test_disabled_mode_is_logged_loudly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="serve_app.auth.deps"):
        log_auth_mode(make_settings(auth_mode="disabled"))
    [record] = caplog.records
    assert record.levelno == logging.WARNING and "AUTHENTICATION IS DISABLED" in record.getMessage()


def test_required_mode_is_logged_without_the_secret(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="serve_app.auth.deps"):
        log_auth_mode(make_settings())
    assert "authentication required" in caplog.text and SECRET not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_tool_scopes_default_guards_http_get(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("JWT_SECRET", SECRET)
    assert AuthSettings().tool_scopes == {"http_get": "tools:http_get"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("http_get=tools:http_get, calculator=tools:calc", {"http_get": "tools:http_get", "calculator": "tools:calc"}),
        ('{"sleep": "admin"}', {"sleep": "admin"}),
        ("", {}),
    ],
)
def test_tool_scopes_from_the_environment(clean_env: pytest.MonkeyPatch, raw: str, expected: dict[str, str]) -> None:
    clean_env.setenv("JWT_SECRET", SECRET)
    clean_env.setenv("TOOL_SCOPES", raw)
    assert AuthSettings().tool_scopes == expected


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        ("http_get", "tool=scope pairs"),
        ("http_get=", "tool=scope pairs"),
        ("bad name!=tools:x", "not a tool name"),
        ("http_get=root", "tools:<name> or a known scope"),
        ("http_get=tools:", "tools:<name> or a known scope"),
    ],
)
def test_a_malformed_tool_scope_map_is_refused_naming_it(
    clean_env: pytest.MonkeyPatch, raw: str, complaint: str
) -> None:
    clean_env.setenv("JWT_SECRET", SECRET)
    clean_env.setenv("TOOL_SCOPES", raw)
    with pytest.raises(ValidationError, match="TOOL_SCOPES") as caught:
        AuthSettings()
    assert complaint in str(caught.value)
