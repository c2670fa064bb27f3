"""The FastAPI security dependencies: who is calling, and may they call this route.

A caller sends a JWT (``Authorization: Bearer <jwt>``) or an API key
(``X-API-Key: as_...``, or ``Authorization: Bearer as_...``). Routes ask for
``PrincipalDep`` or, to demand scopes, ``Depends(require_scopes("chat"))``
(aliases below). Wire an app with ``install_auth(app, settings, key_store)``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from agent.errors import AgentError
from agent.keys import SCOPES, ApiKeyStore, Scope
from serve_app.auth.api_keys import looks_like_api_key, verify_api_key
from serve_app.auth.config import AuthSettings
from serve_app.auth.errors import ForbiddenError, UnauthorizedError
from serve_app.auth.jwt import JwtVerifier
from serve_app.http import identity
from serve_app.http.errors import error_response
from serve_app.http.identity import Principal
from serve_app.http.openai_compat.protocol import ErrorResponse, is_openai_path

logger = logging.getLogger(__name__)

bearer_scheme = HTTPBearer(auto_error=False, description="A JWT, or an API key (as_...)")
api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key (as_...)")

PUBLIC_PATHS = frozenset({"/live", "/ready", "/health"})
DEVELOPMENT_SCOPES = frozenset(s for s in SCOPES if s != "admin")
WWW_AUTHENTICATE = {"WWW-Authenticate": 'Bearer realm="agentserve"'}
_OUTCOME = "auth_outcome"  # request.state: the Principal, or the AgentError authentication raised


def credentials_of(request: Request) -> tuple[str | None, str | None]:
    """(bearer token, API key) as ``bearer_scheme`` and ``api_key_scheme`` read them; None when absent."""
    scheme, token = get_authorization_scheme_param(request.headers.get("authorization"))
    bearer = token if scheme.lower() == "bearer" and token else None
    return bearer, request.headers.get("x-api-key") or None


class Authenticator:
    """Turns a request's credential into a ``Principal``; one per app, on ``app.state.authenticator``.

    Args:
        settings: The mode and the JWT verification settings.
        key_store: Where API keys are looked up; None refuses every API key.

    Raises:
        ValueError: the JWT public key or JWKS file does not fit the settings.
    """

    def __init__(self, settings: AuthSettings, key_store: ApiKeyStore | None) -> None:
        self.settings = settings
        self.jwt = JwtVerifier(settings)
        self.key_store = key_store
        # Development callers may use every tool: the scopes that guard tools come with them.
        self.development_scopes = DEVELOPMENT_SCOPES | frozenset(
            s for s in settings.tool_scopes.values() if s != "admin"
        )

    async def principal_of(self, request: Request) -> Principal:
        """The request's principal, authenticated once per request (the rate limiter asks first, then the route).

        Raises:
            UnauthorizedError: as ``authenticate``; the same error again on a second ask.
        """
        outcome = getattr(request.state, _OUTCOME, None)
        if outcome is None:
            bearer, api_key = credentials_of(request)
            try:
                outcome = await self.authenticate(request, bearer, api_key)
            except AgentError as exc:
                outcome = exc
            setattr(request.state, _OUTCOME, outcome)
        if isinstance(outcome, AgentError):
            raise outcome
        return outcome

    async def authenticate(self, request: Request, bearer: str | None, api_key: str | None) -> Principal:
        """The principal; with auth disabled and no credential, the request's ``user_id``.

        A credential that is sent is always checked, in either mode.
        """
        if bearer is not None and api_key is not None:
            raise UnauthorizedError("send one credential, a bearer token or an X-API-Key, not both")
        credential = api_key if api_key is not None else bearer
        if credential is None:
            if self.settings.disabled:
                return self._development_principal(request)
            raise UnauthorizedError("authentication required: send a bearer token or an X-API-Key")
        if not self.settings.disabled:
            return await self._verify(credential, api_key is not None)
        try:
            return await self._verify(credential, api_key is not None)
        except UnauthorizedError:
            # NOTE: OpenAI SDKs always send some key; with auth disabled a credential that
            # does not verify is ignored (a valid one still gives its principal, e.g. admin).
            return self._development_principal(request)

    def _development_principal(self, request: Request) -> Principal:
        return identity.get_principal(request).model_copy(update={"scopes": self.development_scopes})

    async def _verify(self, credential: str, is_api_key_header: bool) -> Principal:
        if is_api_key_header or looks_like_api_key(credential):
            if self.key_store is None:
                raise UnauthorizedError("API keys are not accepted here")
            record = await verify_api_key(self.key_store, credential)
            return Principal(id=record.owner, kind="api_key", scopes=frozenset(record.scopes))
        token = self.jwt.verify(credential)
        return Principal(id=token.subject, kind="jwt", scopes=token.scopes)


def get_authenticator(request: Request) -> Authenticator:
    found = getattr(request.app.state, "authenticator", None)
    if not isinstance(found, Authenticator):
        # NOTE: fail closed: an app built without install_auth() answers 500, never unauthenticated.
        raise RuntimeError("authentication is not installed on this app: call install_auth()")
    return found


async def authenticator_dependency(request: Request) -> Authenticator:
    """``get_authenticator`` as a dependency: ``async`` so FastAPI calls it on the loop, not in its threadpool."""
    return get_authenticator(request)


async def get_principal(
    request: Request,
    authenticator: Annotated[Authenticator, Depends(authenticator_dependency)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    api_key: Annotated[str | None, Depends(api_key_scheme)],
) -> Principal:
    """Who is calling; 401 without a valid credential (unless auth is disabled)."""
    # NOTE: bearer and api_key declare the security schemes (OpenAPI); credentials_of reads the same headers.
    return await authenticator.principal_of(request)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_scopes(*scopes: Scope) -> Callable[..., Awaitable[Principal]]:
    """A dependency giving the principal, or 403 when it lacks any of ``scopes``."""
    needed = frozenset(scopes)

    async def principal_with_scopes(principal: PrincipalDep) -> Principal:
        missing = needed - principal.scopes
        if missing:
            raise ForbiddenError(f"this needs the scope(s): {' '.join(sorted(missing))}")
        return principal

    return principal_with_scopes


ChatPrincipal = Annotated[Principal, Depends(require_scopes("chat"))]
ToolsPrincipal = Annotated[Principal, Depends(require_scopes("tools:execute"))]
MemoryPrincipal = Annotated[Principal, Depends(require_scopes("memory"))]
AdminPrincipal = Annotated[Principal, Depends(require_scopes("admin"))]


def unprotected_routes(app: FastAPI, public: frozenset[str] = PUBLIC_PATHS) -> list[str]:
    """The app's operations, health probes aside, that ask for no credential: each one a hole.

    Read from the OpenAPI document (every route that depends on ``get_principal``
    lists our security schemes there); a test of the whole app asserting this is
    empty keeps a new route from skipping auth. Routes hidden from the schema are
    not seen.
    """
    document = get_openapi(title=app.title, version=app.version, routes=app.routes)
    return [
        f"{method.upper()} {path}"
        for path, operations in document.get("paths", {}).items()
        if path not in public
        for method, operation in operations.items()
        if not operation.get("security")
    ]


def log_auth_mode(settings: AuthSettings) -> None:
    """Say at start-up how callers are authenticated; loudly when they are not."""
    if settings.disabled:
        bar = "!" * 78
        logger.warning(
            "\n%s\n!!! AUTHENTICATION IS DISABLED (AUTH_MODE=disabled, %s).\n"
            "!!! Every request is trusted as the user_id it names (anonymous when absent).\n"
            "!!! For development only: production settings refuse this mode.\n%s",
            bar,
            settings.agentserve_env,
            bar,
        )
        return
    source = "JWT_SECRET" if settings.uses_hmac else ("JWT_PUBLIC_KEY" if settings.jwt_public_key else "JWT_JWKS_FILE")
    logger.info(
        "authentication required: JWT (%s, key from %s, leeway %ss) or API key",
        ",".join(settings.jwt_algorithms),
        source,
        settings.jwt_leeway_s,
    )
    reason = settings.weak_secret_reason() if settings.uses_hmac else None
    if reason is not None:
        logger.warning("%s: bearer tokens are weak or refused (production refuses to start so)", reason)


def install_auth(app: FastAPI, settings: AuthSettings, key_store: ApiKeyStore | None) -> None:
    """Put the authenticator and key store on ``app.state``, map auth errors, log the mode."""
    app.state.authenticator = Authenticator(settings, key_store)
    app.state.key_store = key_store
    install_auth_error_handlers(app)
    log_auth_mode(settings)


def _auth_error(request: Request, status: int, exc: AgentError, headers: dict[str, str] | None) -> JSONResponse:
    if is_openai_path(request.scope):  # the OpenAI-compatible API answers in OpenAI's error shape
        body = ErrorResponse.build(status, exc.message, code=exc.code).model_dump()
        return JSONResponse(body, status_code=status, headers=headers)
    return error_response(request, status, exc.code, exc.message, exc.field, headers=headers)


def install_auth_error_handlers(app: FastAPI) -> None:
    """401 with ``WWW-Authenticate: Bearer``, and 403, in our error shape (OpenAI's under ``/v1``)."""

    @app.exception_handler(UnauthorizedError)
    async def _unauthorized(request: Request, exc: UnauthorizedError) -> JSONResponse:
        return _auth_error(request, 401, exc, dict(WWW_AUTHENTICATE))

    @app.exception_handler(ForbiddenError)
    async def _forbidden(request: Request, exc: ForbiddenError) -> JSONResponse:
        return _auth_error(request, 403, exc, None)
