"""Who is calling: the principal every route acts for.

Until authentication lands, the caller is the request's ``user_id`` (query
parameter, or the ``X-User-ID`` header for routes whose body is not ours),
``anonymous`` when absent. Authentication replaces ``get_principal`` and the
routes ask ``serve_app.auth.deps`` (which falls back to ``get_principal``
only when authentication is disabled).
"""

from __future__ import annotations

import re
from typing import Literal

from fastapi import Request
from pydantic import BaseModel, Field

from agent.dto import ID_PATTERN
from agent.errors import InvalidRequestError

_ID = re.compile(ID_PATTERN)


class Principal(BaseModel):
    id: str
    kind: Literal["anonymous", "development", "jwt", "api_key"] = "development"
    scopes: frozenset[str] = Field(default_factory=lambda: frozenset({"chat", "tools:execute", "memory"}))


def get_principal(request: Request) -> Principal:
    user = request.query_params.get("user_id") or request.headers.get("x-user-id")
    if user is None:
        return Principal(id="anonymous", kind="anonymous")
    if not _ID.match(user):
        raise InvalidRequestError("user_id: must match " + ID_PATTERN, field="user_id")
    return Principal(id=user)


def acting_user(principal: Principal, body_user_id: str | None) -> str:
    """The user a request acts for: the authenticated principal, always.

    Only without authentication (development) may a body's ``user_id`` name the user.
    """
    if principal.kind in ("anonymous", "development") and body_user_id:
        return body_user_id
    return principal.id
