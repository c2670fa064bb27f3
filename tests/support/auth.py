"""Auth settings for tests of the HTTP layer that are not about auth."""

from __future__ import annotations

from serve_app.auth.config import AuthSettings


def dev_auth() -> AuthSettings:
    """Authentication disabled (development): the caller is the request's user_id."""
    return AuthSettings(_env_file=None, auth_mode="disabled")  # type: ignore[call-arg]
