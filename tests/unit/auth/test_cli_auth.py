"""``agentserve token mint`` and ``agentserve keys ...`` through ``serve_app.cli.main``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.keys import ApiKeyRecord
from memory.sqlite_store import SqliteConversationStore
from serve_app.auth.jwt import JwtVerifier
from serve_app.cli import main
from tests.unit.auth.support import SECRET, make_settings
from tests.unit.auth.test_config import AUTH_ENV


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """Auth settings and a SQLite store in tmp_path, from the environment only (no .env file)."""
    for name in AUTH_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JWT_SECRET", SECRET)
    monkeypatch.setenv("DATABASE_URL", "")
    monkeypatch.setenv("AGENTSERVE_DATA_DIR", str(tmp_path / "data"))
    return monkeypatch


async def stored_keys(path: Path) -> list[ApiKeyRecord]:
    store = SqliteConversationStore(str(path))
    try:
        return await store.list_api_keys()
    finally:
        await store.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_token_mint_prints_a_token_that_verifies(env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    env.setenv("JWT_ISSUER", "agentserve-cli")
    code, out, _ = run(capsys, "token", "mint", "--sub", "alice", "--scopes", "chat,memory", "--ttl", "120")
    assert code == 0
    verified = JwtVerifier(make_settings(jwt_issuer="agentserve-cli")).verify(out.strip())
    assert verified.subject == "alice" and verified.scopes == {"chat", "memory"}
    assert verified.claims["exp"] - verified.claims["iat"] == 120


def test_token_mint_refuses_unsafe_settings_without_showing_the_secret(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("AGENTSERVE_ENV", "production")
    env.setenv("JWT_SECRET", "change-me")
    code, out, err = run(capsys, "token", "mint", "--sub", "alice")
    assert code == 1 and out == "" and "placeholder" in err and "change-me" not in err


def test_unknown_scopes_are_refused(env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["token", "mint", "--sub", "alice", "--scopes", "chat,root"])
    assert info.value.code == 2 and "scopes must be some of" in capsys.readouterr().err


def test_a_tool_scope_is_accepted_like_the_api_accepts_it(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "token", "mint", "--sub", "alice", "--scopes", "chat,tools:http_get")
    assert code == 0
    assert JwtVerifier(make_settings()).verify(out.strip()).scopes == {"chat", "tools:http_get"}


def test_keys_create_list_revoke_against_sqlite(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = run(
        capsys, "keys", "create", "--owner", "bob", "--name", "ci bot", "--scopes", "chat,tools:execute"
    )
    assert code == 0 and "shown only now" in err
    key = out.strip()
    assert key.startswith("as_")

    code, out, _ = run(capsys, "keys", "list")
    header, row = out.strip().splitlines()
    assert header.split("\t")[:3] == ["id", "prefix", "owner"]
    key_id, prefix, owner, name, scopes, _, last_used, state = row.split("\t")
    assert (prefix, owner, name, scopes, last_used, state) == (
        key[3:11],
        "bob",
        "ci bot",
        "chat,tools:execute",
        "-",
        "active",
    )
    assert key not in out
    assert run(capsys, "keys", "list", "--owner", "nobody")[1].strip().count("\n") == 0

    assert run(capsys, "keys", "revoke", key_id)[:2] == (0, f"revoked {key_id}\n")
    assert run(capsys, "keys", "list")[1].strip().endswith("revoked")
    code, _, err = run(capsys, "keys", "revoke", "key_missing")
    assert code == 1 and "not found" in err

    [stored] = asyncio.run(stored_keys(tmp_path / "data" / "agentserve.db"))
    assert stored.owner == "bob" and stored.revoked and key not in stored.model_dump_json()


def test_keys_create_checks_the_owner(env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "keys", "create", "--owner", "bob smith", "--name", "n", "--scopes", "chat")
    assert code == 1 and out == "" and "owner" in err


@pytest.mark.parametrize("ttl", ["-5", "0", "abc"])
def test_token_mint_refuses_a_ttl_that_is_no_positive_number_of_seconds(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], ttl: str
) -> None:
    """Before, ``--ttl -5`` printed a token that expired before it was issued, exit 0."""
    with pytest.raises(SystemExit) as exited:
        main(["token", "mint", "--sub", "alice", "--ttl", ttl])
    out, err = capsys.readouterr()
    assert exited.value.code == 2 and out == ""
    assert f"argument --ttl: {ttl!r} is not a positive whole number of seconds" in err
