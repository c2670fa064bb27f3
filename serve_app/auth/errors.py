"""The errors of authentication, in the core's error hierarchy (mapped to 401 and 403)."""

from __future__ import annotations

from agent.errors import AgentError


class UnauthorizedError(AgentError):
    """No credential, or one that is invalid, expired or revoked (HTTP 401).

    The message names the reason in general terms only; it never repeats the credential.
    """

    code = "unauthorized"


class ForbiddenError(AgentError):
    """A valid principal without the scope the route needs (HTTP 403)."""

    code = "forbidden"
