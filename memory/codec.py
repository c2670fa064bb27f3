"""What every conversation store encodes the same way: cursors, titles, timestamps, rows, API keys."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from agent.dto import Message, Role, ToolCall, Usage
from agent.errors import InvalidRequestError, NotFoundError
from agent.keys import ApiKeyRecord
from agent.ports import Session

TITLE_CHARS = 60
_SPACES = re.compile(r"\s+")


def session_not_found(session_id: str) -> NotFoundError:
    # NOTE: one message for "missing" and "someone else's", so ids of others leak nothing.
    return NotFoundError(f"session '{session_id}' not found", field="session_id")


def check_limit(limit: int) -> None:
    if limit < 1:
        raise InvalidRequestError("limit must be at least 1", field="limit")


def title_from(messages: list[Message]) -> str | None:
    """The first user message's text on one line, cut to about ``TITLE_CHARS`` characters."""
    for m in messages:
        if m.role is Role.USER and m.content and m.content.strip():
            text = _SPACES.sub(" ", m.content).strip()
            return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1].rstrip() + "…"
    return None


def as_utc(value: datetime) -> datetime:
    """Timezone-aware UTC; a naive value is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def ts_text(value: datetime) -> str:
    """Fixed-width ISO text, so text order is time order (SQLite stores timestamps so)."""
    return as_utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ts_parse(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def encode_cursor(*parts: str | int) -> str:
    raw = json.dumps(list(parts), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, *types: type) -> list[Any]:
    """The cursor's parts, checked against ``types``.

    Raises:
        InvalidRequestError: the cursor was not made by ``encode_cursor`` with these types.
    """
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        parts = None
    if (
        not isinstance(parts, list)
        or len(parts) != len(types)
        or not all(type(p) is t for p, t in zip(parts, types, strict=True))
    ):
        raise InvalidRequestError("invalid cursor", field="cursor")
    return parts


def session_cursor(last: Session) -> str:
    """Where the next page of sessions starts: after (updated_at, id) of the last one shown."""
    return encode_cursor(ts_text(last.updated_at), last.id)


def parse_session_cursor(cursor: str) -> tuple[datetime, str]:
    stamp, session_id = decode_cursor(cursor, str, str)
    try:
        return ts_parse(stamp), session_id
    except ValueError:
        raise InvalidRequestError("invalid cursor", field="cursor") from None


def message_cursor(last_seq: int) -> str:
    """Where the next page of messages starts: after this position in the session."""
    return encode_cursor(last_seq)


def parse_message_cursor(cursor: str) -> int:
    seq: int = decode_cursor(cursor, int)[0]
    return seq


def message_values(m: Message) -> tuple[str, str, str | None, str, str | None, str | None, str | None]:
    """(id, role, content, tool_calls JSON, tool_call_id, name, usage JSON) of a message."""
    tool_calls = json.dumps([c.model_dump() for c in m.tool_calls])
    usage = m.usage.model_dump_json() if m.usage is not None else None
    return (m.id, m.role.value, m.content, tool_calls, m.tool_call_id, m.name, usage)


def message_from(
    *,
    id: str,
    role: str,
    content: str | None,
    tool_calls: Any,
    tool_call_id: str | None,
    name: str | None,
    usage: Any,
    created_at: datetime,
) -> Message:
    """A message from stored columns; JSON columns may come as text or already decoded."""
    calls = json.loads(tool_calls) if isinstance(tool_calls, str) else tool_calls
    used = json.loads(usage) if isinstance(usage, str) else usage
    return Message(
        id=id,
        role=Role(role),
        content=content,
        tool_calls=[ToolCall.model_validate(c) for c in calls or []],
        tool_call_id=tool_call_id,
        name=name,
        usage=Usage.model_validate(used) if used is not None else None,
        created_at=as_utc(created_at),
    )


def api_key_not_found(key_id: str) -> NotFoundError:
    return NotFoundError(f"API key '{key_id}' not found", field="key_id")


def api_key_values(r: ApiKeyRecord, stamp: Callable[[datetime], Any]) -> tuple[Any, ...]:
    """(id, prefix, hash, owner, name, scopes JSON, created_at, last_used_at, revoked_at); times through ``stamp``."""

    def maybe(value: datetime | None) -> Any:
        return stamp(value) if value is not None else None

    scopes = json.dumps(r.scopes)
    return (
        r.id,
        r.prefix,
        r.key_hash,
        r.owner,
        r.name,
        scopes,
        stamp(r.created_at),
        maybe(r.last_used_at),
        maybe(r.revoked_at),
    )


def _when(value: str | datetime) -> datetime:
    return ts_parse(value) if isinstance(value, str) else as_utc(value)


def api_key_from(row: Any) -> ApiKeyRecord:
    """A record from an ``api_keys`` row: JSON as text or decoded, times as text or datetime."""
    scopes, used, revoked = row["scopes"], row["last_used_at"], row["revoked_at"]
    return ApiKeyRecord(
        id=row["id"],
        prefix=row["prefix"],
        key_hash=row["hash"],
        owner=row["owner"],
        name=row["name"],
        scopes=json.loads(scopes) if isinstance(scopes, str) else scopes,
        created_at=_when(row["created_at"]),
        last_used_at=_when(used) if used is not None else None,
        revoked_at=_when(revoked) if revoked is not None else None,
    )
