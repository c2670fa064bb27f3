"""API keys: their form, hashing, verification, revocation and last use, on the in-memory store."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import pytest

from agent.dto import utcnow
from agent.errors import ConflictError, InvalidRequestError, StoreUnavailableError
from agent.keys import ApiKeyRecord
from memory.in_memory import InMemoryConversationStore
from serve_app.auth import api_keys
from serve_app.auth.api_keys import create_api_key, generate_api_key, hash_api_key, verify_api_key
from serve_app.auth.errors import UnauthorizedError


@pytest.fixture
def store() -> InMemoryConversationStore:
    return InMemoryConversationStore()


def test_keys_have_the_documented_form_and_differ() -> None:
    made = {generate_api_key() for _ in range(200)}
    assert len({key for _, key in made}) == 200 and len({prefix for prefix, _ in made}) == 200
    for prefix, key in made:
        match = re.fullmatch(r"as_([a-z0-9]{8})_([A-Za-z0-9_-]+)", key)
        assert match is not None and match.group(1) == prefix and len(match.group(2)) >= 32


def test_the_hash_is_sha256_of_the_whole_key() -> None:
    _, key = generate_api_key()
    assert hash_api_key(key) == hashlib.sha256(key.encode()).hexdigest()


async def test_a_created_key_verifies_and_only_its_hash_is_stored(store: InMemoryConversationStore) -> None:
    made = await create_api_key(store, "alice", "laptop", ["memory", "chat"])
    assert made.key.startswith(f"as_{made.record.prefix}_")
    assert made.record.owner == "alice" and made.record.scopes == ["chat", "memory"]
    [stored] = await store.list_api_keys()
    secret = made.key.removeprefix(f"as_{made.record.prefix}_")  # may itself hold "_"
    assert made.key not in stored.model_dump_json() and secret not in stored.model_dump_json()
    assert stored.key_hash == hash_api_key(made.key)
    assert "key_hash" not in made.record.model_dump()
    record = await verify_api_key(store, made.key)
    assert record.id == made.record.id and record.owner == "alice"


async def test_wrong_unknown_and_malformed_keys_are_refused(store: InMemoryConversationStore) -> None:
    made = await create_api_key(store, "alice", "laptop", ["chat"])
    prefix = made.record.prefix
    candidates = [
        f"as_{prefix}_{'A' * 43}",  # right prefix, wrong secret
        f"as_zzzzzzzz_{'A' * 43}",  # unknown prefix
        made.key[:-1],  # cut short
        made.key + "x",
        f"as_{prefix}_short",
        "as_",
        "not-a-key",
        "",
    ]
    for key in candidates:
        with pytest.raises(UnauthorizedError) as info:
            await verify_api_key(store, key)
        assert info.value.message == "invalid API key"


async def test_a_revoked_key_is_refused(store: InMemoryConversationStore) -> None:
    made = await create_api_key(store, "alice", "laptop", ["chat"])
    await store.revoke_api_key(made.record.id)
    with pytest.raises(UnauthorizedError, match="revoked"):
        await verify_api_key(store, made.key)


async def test_last_use_is_recorded_at_most_once_a_minute(store: InMemoryConversationStore) -> None:
    made = await create_api_key(store, "alice", "laptop", ["chat"])
    assert (await store.list_api_keys())[0].last_used_at is None
    await verify_api_key(store, made.key)
    first = (await store.list_api_keys())[0].last_used_at
    assert first is not None and utcnow() - first < timedelta(seconds=5)
    await verify_api_key(store, made.key)
    assert (await store.list_api_keys())[0].last_used_at == first  # within the interval: no write
    stored = store._keys[made.record.id]
    stored.last_used_at = utcnow() - api_keys.TOUCH_INTERVAL - timedelta(seconds=1)
    await verify_api_key(store, made.key)
    again = (await store.list_api_keys())[0].last_used_at
    assert again is not None and again > first


async def test_a_failed_last_use_write_does_not_refuse_the_key(
    store: InMemoryConversationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = await create_api_key(store, "alice", "laptop", ["chat"])

    async def down(key_id: str) -> None:
        raise StoreUnavailableError("the conversation store is unavailable")

    monkeypatch.setattr(store, "touch_api_key", down)
    assert (await verify_api_key(store, made.key)).owner == "alice"


async def test_owner_and_scopes_are_checked(store: InMemoryConversationStore) -> None:
    with pytest.raises(InvalidRequestError, match="owner"):
        await create_api_key(store, "alice smith", "n", ["chat"])
    with pytest.raises(InvalidRequestError, match="scopes"):
        await create_api_key(store, "alice", "n", ["chat", "root"])
    with pytest.raises(InvalidRequestError, match="scopes"):
        await create_api_key(store, "alice", "n", [])
    assert await store.list_api_keys() == []


async def test_a_prefix_collision_draws_again(
    store: InMemoryConversationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = ApiKeyRecord(prefix="aaaaaaaa", key_hash="0" * 64, owner="bob")
    await store.create_api_key(taken)
    draws = iter([("aaaaaaaa", "as_aaaaaaaa_" + "x" * 43), ("bbbbbbbb", "as_bbbbbbbb_" + "y" * 43)])
    monkeypatch.setattr(api_keys, "generate_api_key", lambda: next(draws))
    made = await create_api_key(store, "alice", "n", ["chat"])
    assert made.record.prefix == "bbbbbbbb"
    monkeypatch.setattr(api_keys, "generate_api_key", lambda: ("aaaaaaaa", "as_aaaaaaaa_" + "z" * 43))
    with pytest.raises(ConflictError):
        await create_api_key(store, "alice", "n", ["chat"])
