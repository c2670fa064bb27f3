"""API keys: made, hashed, checked against an ``ApiKeyStore``.

A key reads ``as_<prefix>_<secret>``: ``as_`` tells it from a JWT, the 8-char
prefix finds its record (and may be shown in listings), the secret is 32
random bytes (43 URL-safe characters). The store keeps only SHA-256 of the
whole key.

NOTE: SHA-256 and no slow KDF (bcrypt, argon2) on purpose. Slow KDFs protect
low-entropy human passwords from guessing; a 256-bit random secret cannot be
guessed from its hash at any speed, and a slow hash would cost every request
tens of milliseconds of CPU on the Ingress.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import string
from datetime import datetime, timedelta

from pydantic import BaseModel

from agent.dto import ID_PATTERN, utcnow
from agent.errors import ConflictError, InvalidRequestError, StoreUnavailableError
from agent.keys import SCOPES, ApiKeyRecord, ApiKeyStore
from serve_app.auth.config import TOOL_SCOPE
from serve_app.auth.errors import UnauthorizedError

logger = logging.getLogger(__name__)

KEY_MARK = "as_"
PREFIX_CHARS = 8
SECRET_BYTES = 32
TOUCH_INTERVAL = timedelta(seconds=60)
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits
_KEY = re.compile(r"^as_([a-z0-9]{8})_([A-Za-z0-9_-]{32,})$")
_ID = re.compile(ID_PATTERN)


class ApiKeyInfo(BaseModel):
    """What may be shown of a stored key: everything but its hash."""

    id: str
    prefix: str
    owner: str
    name: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    @classmethod
    def of(cls, record: ApiKeyRecord) -> ApiKeyInfo:
        return cls.model_validate(record.model_dump(exclude={"key_hash"}))


class NewApiKey(BaseModel):
    """A key just made: ``key`` is shown this once and never again."""

    key: str
    record: ApiKeyInfo


def looks_like_api_key(value: str) -> bool:
    return value.startswith(KEY_MARK)


def generate_api_key() -> tuple[str, str]:
    """(prefix, full key) of a new random key."""
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(PREFIX_CHARS))
    return prefix, f"{KEY_MARK}{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_scopes(scopes: list[str]) -> list[str]:
    """The scopes, sorted and unique: the known ones, and ``tools:<name>`` ones (see ``TOOL_SCOPES``)."""
    unknown = sorted(s for s in set(scopes) - set(SCOPES) if not TOOL_SCOPE.match(s))
    if unknown or not scopes:
        raise InvalidRequestError(f"scopes must be some of {list(SCOPES)} or tools:<name>", field="scopes")
    return sorted(set(scopes))


async def create_api_key(store: ApiKeyStore, owner: str, name: str, scopes: list[str]) -> NewApiKey:
    """Make a key for ``owner`` and store its hash.

    Raises:
        InvalidRequestError: ``owner`` is not a valid id, or a scope is unknown.
    """
    if not _ID.match(owner):
        raise InvalidRequestError(f"owner must match {ID_PATTERN}", field="owner")
    scopes = check_scopes(scopes)
    tries = 3
    while True:
        prefix, key = generate_api_key()
        record = ApiKeyRecord(prefix=prefix, key_hash=hash_api_key(key), owner=owner, name=name, scopes=scopes)
        try:
            await store.create_api_key(record)
        except ConflictError:  # a prefix collision (one in 36^8 per key): draw again
            tries -= 1
            if tries == 0:
                raise
            continue
        return NewApiKey(key=key, record=ApiKeyInfo.of(record))


async def verify_api_key(store: ApiKeyStore, key: str) -> ApiKeyRecord:
    """The stored record of a presented key, with its last use recorded (at most once a minute).

    Raises:
        UnauthorizedError: the key is malformed, unknown, wrong or revoked.
        StoreUnavailableError: the store cannot be asked now.
    """
    match = _KEY.match(key)
    record = await store.get_api_key_by_prefix(match.group(1)) if match else None
    # NOTE: compare_digest, so the time taken says nothing about how much of the hash matched.
    if record is None or not hmac.compare_digest(record.key_hash, hash_api_key(key)):
        raise UnauthorizedError("invalid API key")
    if record.revoked:
        raise UnauthorizedError("API key revoked")
    now = utcnow()
    if record.last_used_at is None or now - record.last_used_at >= TOUCH_INTERVAL:
        try:
            await store.touch_api_key(record.id)
        except StoreUnavailableError:
            logger.warning("could not record the last use of API key %s", record.id)
        record.last_used_at = now
    return record
