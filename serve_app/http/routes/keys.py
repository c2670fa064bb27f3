"""API key administration (scope ``admin``): make a key, list keys, revoke one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from agent.dto import ID_PATTERN
from agent.keys import ApiKeyStore, Scope
from serve_app.auth import api_keys
from serve_app.auth.api_keys import ApiKeyInfo, NewApiKey
from serve_app.auth.config import TOOL_SCOPE
from serve_app.auth.deps import require_scopes
from serve_app.http.errors import BODY_ERROR_RESPONSES, ERROR_RESPONSES

router = APIRouter(prefix="/api/keys", tags=["keys"], dependencies=[Depends(require_scopes("admin"))])


async def get_key_store(request: Request) -> ApiKeyStore:  # async: no threadpool hop
    store: ApiKeyStore = request.app.state.key_store
    return store


KeyStoreDep = Annotated[ApiKeyStore, Depends(get_key_store)]
# A tool's own scope (TOOL_SCOPES), e.g. tools:http_get.
ToolScope = Annotated[str, Field(pattern=TOOL_SCOPE.pattern, description="a tool's scope, e.g. tools:http_get")]


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner: str = Field(pattern=ID_PATTERN, description="the principal the key acts as")
    name: str = Field(min_length=1, max_length=200, description="what the key is for")
    scopes: list[Scope | ToolScope] = Field(min_length=1, max_length=64)


@router.post("", response_model=NewApiKey, status_code=201, responses=BODY_ERROR_RESPONSES)
async def create_key(body: ApiKeyCreate, store: KeyStoreDep) -> NewApiKey:
    """Make an API key; the key is in this response only, so store it now."""
    return await api_keys.create_api_key(store, body.owner, body.name, list(body.scopes))


@router.get("", response_model=list[ApiKeyInfo], responses=ERROR_RESPONSES)
async def list_keys(
    store: KeyStoreDep, owner: Annotated[str | None, Query(pattern=ID_PATTERN)] = None
) -> list[ApiKeyInfo]:
    """The API keys (of one owner, when given), oldest first; never the keys or their hashes."""
    return [ApiKeyInfo.of(r) for r in await store.list_api_keys(owner)]


@router.delete("/{key_id}", status_code=204, responses=ERROR_RESPONSES)
async def revoke_key(key_id: str, store: KeyStoreDep) -> Response:
    """Revoke an API key; it stops working at once."""
    await store.revoke_api_key(key_id)
    return Response(status_code=204)
