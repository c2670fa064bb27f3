"""The core's own error types.

The HTTP layer maps each class to a status code in one table
(``serve_app/http/errors.py``); nothing here knows about HTTP or Ray.
Every error pickles with its attributes so it survives a handle hop.
"""

from __future__ import annotations

from typing import Any


class AgentError(Exception):
    """Base of every error the core raises on purpose.

    Args:
        message: A short, user-safe description (never secrets or internals).
        field: The request field at fault, when there is one.
        retry_after: Seconds after which a retry may succeed, when known.
    """

    code = "agent_error"

    def __init__(self, message: str, *, field: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        # NOTE: keyword-only attributes do not survive the default Exception pickling,
        # and errors cross deployment handles pickled.
        return (_rebuild, (type(self), self.message, self.field, self.retry_after))


def _rebuild(cls: type[AgentError], message: str, field: str | None, retry_after: float | None) -> AgentError:
    return cls(message, field=field, retry_after=retry_after)


class InvalidRequestError(AgentError):
    """The request is well-formed JSON but asks for something invalid."""

    code = "invalid_request"


class NotFoundError(AgentError):
    """The thing asked for does not exist (or belongs to someone else)."""

    code = "not_found"


class ConflictError(AgentError):
    """The request conflicts with stored state (e.g. an idempotency key reused)."""

    code = "conflict"


class ToolTimeoutError(AgentError):
    """A tool run directly did not finish in time."""

    code = "tool_timeout"


class ToolNotFoundError(NotFoundError):
    code = "tool_not_found"


class LLMError(AgentError):
    """The LLM provider failed in a way a retry will not fix."""

    code = "llm_error"


class LLMTimeoutError(LLMError):
    code = "llm_timeout"


class LLMUnavailableError(LLMError):
    """The provider could not be reached or answered 5xx after the retries."""

    code = "llm_unavailable"


class LLMRateLimitedError(LLMError):
    """The provider kept answering 429 after the retries."""

    code = "llm_rate_limited"


class StoreUnavailableError(AgentError):
    """A store the turn depends on cannot be reached; nothing was written."""

    code = "store_unavailable"
