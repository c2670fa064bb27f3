"""JWT verification: the allow-list, the time claims, issuer and audience, keys and JWKS."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from agent.dto import utcnow
from serve_app.auth.errors import UnauthorizedError
from serve_app.auth.jwt import JwtVerifier, mint_token, scopes_from
from tests.unit.auth.support import SECRET, ec_key, forge_token, make_settings, private_pem, public_pem, rsa_key


@pytest.fixture(scope="module")
def rsa_private() -> rsa.RSAPrivateKey:
    return rsa_key()


@pytest.fixture(scope="module")
def ec_private() -> ec.EllipticCurvePrivateKey:
    return ec_key()


def claims(**overrides: Any) -> dict[str, Any]:
    now = utcnow()
    base: dict[str, Any] = {"sub": "alice", "scope": "chat memory", "iat": now, "exp": now + timedelta(minutes=5)}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs256(payload: dict[str, Any], secret: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(payload, secret, algorithm=algorithm)


def refused(verifier: JwtVerifier, token: str) -> str:
    with pytest.raises(UnauthorizedError) as info:
        verifier.verify(token)
    return info.value.message


# ---------------------------------------------------------------- HS256


def test_a_valid_hs256_token_gives_subject_and_scopes() -> None:
    verified = JwtVerifier(make_settings()).verify(hs256(claims()))
    assert verified.subject == "alice"
    assert verified.scopes == {"chat", "memory"}


def test_a_token_signed_with_another_secret_is_refused() -> None:
    token = hs256(claims(), secret="another-secret-of-enough-length-0123456789")
    assert refused(JwtVerifier(make_settings()), token) == "token signature invalid"


def test_an_expired_token_is_refused() -> None:
    token = hs256(claims(exp=utcnow() - timedelta(minutes=2)))
    assert refused(JwtVerifier(make_settings()), token) == "token expired"


def test_nbf_in_the_future_is_refused() -> None:
    token = hs256(claims(nbf=utcnow() + timedelta(minutes=2)))
    assert refused(JwtVerifier(make_settings()), token) == "token not yet valid"


def test_the_leeway_is_honoured_both_ways() -> None:
    just_expired = hs256(claims(exp=utcnow() - timedelta(seconds=10)))
    almost_valid = hs256(claims(nbf=utcnow() + timedelta(seconds=10)))
    lenient = JwtVerifier(make_settings(jwt_leeway_s=30))
    assert lenient.verify(just_expired).subject == "alice"
    assert lenient.verify(almost_valid).subject == "alice"
    strict = JwtVerifier(make_settings(jwt_leeway_s=0))
    assert refused(strict, just_expired) == "token expired"
    assert refused(strict, almost_valid) == "token not yet valid"


@pytest.mark.parametrize("missing", ["exp", "sub"])
def test_exp_and_sub_are_required(missing: str) -> None:
    token = hs256({k: v for k, v in claims().items() if k != missing})
    assert refused(JwtVerifier(make_settings()), token) == "token lacks a required claim"


def test_issuer_and_audience_are_checked_when_configured() -> None:
    verifier = JwtVerifier(make_settings(jwt_issuer="https://idp.example", jwt_audience="agentserve"))
    good = claims(iss="https://idp.example", aud="agentserve")
    assert verifier.verify(hs256(good)).subject == "alice"
    assert refused(verifier, hs256({**good, "iss": "https://evil.example"})) == "token issuer not accepted"
    assert refused(verifier, hs256({**good, "aud": "another-service"})) == "token audience not accepted"
    assert refused(verifier, hs256(claims(aud="agentserve"))) == "token lacks a required claim"  # no iss
    assert refused(verifier, hs256(claims(iss="https://idp.example"))) == "token lacks a required claim"  # no aud


def test_a_token_for_an_audience_is_refused_when_none_is_configured() -> None:
    assert refused(JwtVerifier(make_settings()), hs256(claims(aud="someone-else"))) == "token audience not accepted"


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_refused(alg: str) -> None:
    payload = {"sub": "admin", "scope": "admin", "exp": int(time.time()) + 300}
    for unsigned in (
        forge_token({"alg": alg, "typ": "JWT"}, payload, None),
        jwt.encode(payload, None, algorithm="none"),
    ):
        assert refused(JwtVerifier(make_settings()), unsigned) == "token algorithm not accepted"


def test_an_algorithm_outside_the_allow_list_is_refused_even_with_the_right_secret() -> None:
    token = hs256(claims(), algorithm="HS512")
    assert refused(JwtVerifier(make_settings(jwt_algorithms=["HS256"])), token) == "token algorithm not accepted"


def test_a_subject_that_is_no_valid_id_is_refused() -> None:
    assert "principal id" in refused(JwtVerifier(make_settings()), hs256(claims(sub="alice@example.com")))


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "as_notajwt", "eyJhbGciOiJIUzI1NiJ9.e30"])
def test_garbage_is_an_invalid_token(token: str) -> None:
    assert refused(JwtVerifier(make_settings()), token) == "invalid token"


def test_without_a_secret_every_token_is_refused() -> None:
    verifier = JwtVerifier(make_settings(jwt_secret=None))
    assert not verifier.configured
    assert "not configured" in refused(verifier, hs256(claims()))


def test_scopes_come_from_scope_or_scopes() -> None:
    assert scopes_from({"scope": "chat  memory"}) == {"chat", "memory"}
    assert scopes_from({"scopes": ["admin", 3]}) == {"admin"}
    assert scopes_from({"scopes": "chat,tools:execute"}) == {"chat", "tools:execute"}
    assert scopes_from({"scope": "chat", "scopes": ["memory"]}) == {"chat", "memory"}
    assert scopes_from({}) == frozenset()


# ---------------------------------------------------------------- RS256 / ES256 and algorithm confusion


def test_rs256_with_a_public_key(rsa_private: rsa.RSAPrivateKey) -> None:
    verifier = JwtVerifier(
        make_settings(jwt_algorithms=["RS256"], jwt_secret=None, jwt_public_key=public_pem(rsa_private))
    )
    token = jwt.encode(claims(), private_pem(rsa_private), algorithm="RS256")
    assert verifier.verify(token).subject == "alice"
    other = jwt.encode(claims(), private_pem(rsa_key()), algorithm="RS256")
    assert refused(verifier, other) == "token signature invalid"


def test_es256_with_a_public_key(ec_private: ec.EllipticCurvePrivateKey) -> None:
    verifier = JwtVerifier(
        make_settings(jwt_algorithms=["ES256"], jwt_secret=None, jwt_public_key=public_pem(ec_private))
    )
    assert verifier.verify(jwt.encode(claims(), private_pem(ec_private), algorithm="ES256")).subject == "alice"


def test_a_pem_with_escaped_newlines_is_accepted(ec_private: ec.EllipticCurvePrivateKey) -> None:
    one_line = public_pem(ec_private).replace("\n", "\\n")
    verifier = JwtVerifier(make_settings(jwt_algorithms=["ES256"], jwt_secret=None, jwt_public_key=one_line))
    assert verifier.verify(jwt.encode(claims(), private_pem(ec_private), algorithm="ES256")).subject == "alice"


def test_hs256_signed_with_the_rsa_public_key_is_refused(rsa_private: rsa.RSAPrivateKey) -> None:
    """The classic confusion attack: the public key (known to all) used as an HMAC secret."""
    pem = public_pem(rsa_private)
    verifier = JwtVerifier(make_settings(jwt_algorithms=["RS256"], jwt_secret=None, jwt_public_key=pem))
    payload = {"sub": "admin", "scope": "admin", "exp": int(time.time()) + 300}
    for secret in (pem.encode(), pem.strip().encode()):
        forged = forge_token({"alg": "HS256", "typ": "JWT"}, payload, secret)
        assert refused(verifier, forged) == "token algorithm not accepted"


def test_a_key_that_does_not_fit_the_algorithms_is_refused_at_start(ec_private: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        JwtVerifier(make_settings(jwt_algorithms=["RS256"], jwt_secret=None, jwt_public_key=public_pem(ec_private)))


def test_a_private_key_is_no_public_key(ec_private: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(ValueError, match="public half") as info:
        JwtVerifier(make_settings(jwt_algorithms=["ES256"], jwt_secret=None, jwt_public_key=private_pem(ec_private)))
    assert "PRIVATE KEY" not in str(info.value)


# ---------------------------------------------------------------- JWKS


def jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str, **extra: Any) -> dict[str, Any]:
    algorithm: Any = jwt.algorithms.RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else jwt.algorithms.ECAlgorithm
    data: dict[str, Any] = json.loads(algorithm.to_jwk(key.public_key()))
    return {**data, "kid": kid, "use": "sig", **extra}


def write_jwks(path: Path, *keys: dict[str, Any]) -> None:
    path.write_text(json.dumps({"keys": list(keys)}))


def test_jwks_picks_the_key_by_kid(tmp_path: Path, rsa_private: rsa.RSAPrivateKey) -> None:
    second = rsa_key()
    path = tmp_path / "jwks.json"
    write_jwks(path, jwk(rsa_private, "one"), jwk(second, "two", alg="RS256"))
    verifier = JwtVerifier(make_settings(jwt_algorithms=["RS256"], jwt_secret=None, jwt_jwks_file=str(path)))
    one = jwt.encode(claims(sub="u1"), private_pem(rsa_private), algorithm="RS256", headers={"kid": "one"})
    two = jwt.encode(claims(sub="u2"), private_pem(second), algorithm="RS256", headers={"kid": "two"})
    assert verifier.verify(one).subject == "u1"
    assert verifier.verify(two).subject == "u2"
    swapped = jwt.encode(claims(), private_pem(second), algorithm="RS256", headers={"kid": "one"})
    assert refused(verifier, swapped) == "token signature invalid"
    assert (
        refused(verifier, jwt.encode(claims(), private_pem(second), algorithm="RS256")) == "token has no key id (kid)"
    )
    unknown = jwt.encode(claims(), private_pem(second), algorithm="RS256", headers={"kid": "three"})
    assert refused(verifier, unknown) == "token key id unknown"


def test_a_jwk_bound_to_one_algorithm_refuses_another(tmp_path: Path, rsa_private: rsa.RSAPrivateKey) -> None:
    path = tmp_path / "jwks.json"
    write_jwks(path, jwk(rsa_private, "one", alg="RS256"))
    verifier = JwtVerifier(make_settings(jwt_algorithms=["RS256", "PS256"], jwt_secret=None, jwt_jwks_file=str(path)))
    token = jwt.encode(claims(), private_pem(rsa_private), algorithm="PS256", headers={"kid": "one"})
    assert refused(verifier, token) == "token algorithm not accepted"


def test_the_jwks_file_is_reloaded_for_an_unknown_kid(tmp_path: Path, rsa_private: rsa.RSAPrivateKey) -> None:
    path = tmp_path / "jwks.json"
    write_jwks(path, jwk(rsa_private, "old"))
    verifier = JwtVerifier(make_settings(jwt_algorithms=["RS256"], jwt_secret=None, jwt_jwks_file=str(path)))
    rotated = ec_key()  # the new key is even of another kind; ES256 is not allowed, so it is skipped
    fresh = rsa_key()
    write_jwks(path, jwk(rsa_private, "old"), jwk(fresh, "new"), jwk(rotated, "ec"))
    os.utime(path, (time.time() + 5, time.time() + 5))
    token = jwt.encode(claims(sub="rotated"), private_pem(fresh), algorithm="RS256", headers={"kid": "new"})
    assert verifier.verify(token).subject == "rotated"
    ec_token = jwt.encode(claims(), private_pem(rotated), algorithm="ES256", headers={"kid": "ec"})
    assert refused(verifier, ec_token) in {"token key id unknown", "token algorithm not accepted"}


def test_a_jwks_file_without_usable_keys_is_refused_at_start(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    write_jwks(path, {"kty": "oct", "k": "c2VjcmV0", "kid": "sym"})
    with pytest.raises(ValueError, match="no signing key"):
        JwtVerifier(make_settings(jwt_algorithms=["RS256"], jwt_secret=None, jwt_jwks_file=str(path)))


# ---------------------------------------------------------------- minting


def test_minted_hs256_tokens_verify() -> None:
    settings = make_settings(jwt_issuer="agentserve", jwt_audience="api")
    token = mint_token("bob", ["memory", "chat"], 60, settings)
    verified = JwtVerifier(settings).verify(token)
    assert verified.subject == "bob" and verified.scopes == {"chat", "memory"}
    assert verified.claims["exp"] - verified.claims["iat"] == 60
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


@pytest.mark.parametrize("ttl_s", [0, -5])
def test_a_token_born_expired_is_not_minted(ttl_s: int) -> None:
    with pytest.raises(ValueError, match="ttl must be a positive number of seconds"):
        mint_token("bob", ["chat"], ttl_s, make_settings())


def test_minted_tokens_expire() -> None:
    settings = make_settings(jwt_leeway_s=0)
    token = mint_token("bob", ["chat"], 60, settings, now=utcnow() - timedelta(minutes=2))
    assert refused(JwtVerifier(settings), token) == "token expired"


def test_minted_rs256_tokens_verify_through_a_jwks(tmp_path: Path, rsa_private: rsa.RSAPrivateKey) -> None:
    path = tmp_path / "jwks.json"
    write_jwks(path, jwk(rsa_private, "k1"))
    settings = make_settings(jwt_algorithms=["RS256"], jwt_secret=None, jwt_jwks_file=str(path))
    token = mint_token("carol", ["admin"], 60, settings, private_key_pem=private_pem(rsa_private), kid="k1")
    assert JwtVerifier(settings).verify(token).scopes == {"admin"}


def test_minting_needs_the_right_key() -> None:
    with pytest.raises(ValueError, match="JWT_SECRET"):
        mint_token("bob", ["chat"], 60, make_settings(jwt_secret=None))
    rs = make_settings(jwt_algorithms=["RS256"], jwt_secret=None, jwt_public_key=public_pem(ec_key()))
    with pytest.raises(ValueError, match="private key"):
        mint_token("bob", ["chat"], 60, rs)
    with pytest.raises(ValueError, match="sub must match"):
        mint_token("bob smith", ["chat"], 60, make_settings())
