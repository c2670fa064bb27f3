"""API keys: the stored record and the port of the store that keeps them.

A key is shown once, when it is made; the store keeps only its SHA-256 and a
short public prefix to find it by. Nothing here knows about HTTP or Ray.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field, field_validator

from agent.dto import new_id, utcnow

Scope = Literal["chat", "tools:execute", "memory", "admin"]
SCOPES: tuple[Scope, ...] = ("chat", "tools:execute", "memory", "admin")


class ApiKeyRecord(BaseModel):
    """One API key as stored: never the key itself, only its hash.

    ``prefix`` is the public part of the key (``as_<prefix>_<secret>``) that
    finds the record; ``key_hash`` is the hex SHA-256 of the whole key.
    """

    id: str = Field(default_factory=lambda: new_id("key"))
    prefix: str = Field(min_length=1, max_length=32)
    key_hash: str = Field(min_length=64, max_length=64)
    owner: str = Field(min_length=1, description="the principal id the key acts as")
    name: str = ""
    scopes: list[str] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=utcnow)
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    @field_validator("scopes")
    @classmethod
    def _sorted_unique(cls, value: list[str]) -> list[str]:
        return sorted(set(value))

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@runtime_checkable
class ApiKeyStore(Protocol):
    """Where API keys live: the conversation store, next to the sessions they own."""

    async def create_api_key(self, record: ApiKeyRecord) -> None:
        """Store a new key.

        Raises:
            ConflictError: a key with this id or prefix is stored already.
        """
        ...

    async def get_api_key_by_prefix(self, prefix: str) -> ApiKeyRecord | None:
        """The key with this prefix, revoked or not; None when there is none."""
        ...

    async def list_api_keys(self, owner: str | None = None) -> list[ApiKeyRecord]:
        """The keys of ``owner`` (every key when None), oldest first."""
        ...

    async def revoke_api_key(self, key_id: str) -> None:
        """Mark a key revoked; revoking it again keeps the first time.

        Raises:
            NotFoundError: no key has this id.
        """
        ...

    async def touch_api_key(self, key_id: str) -> None:
        """Set the key's ``last_used_at`` to now (nothing when the key is gone)."""
        ...
