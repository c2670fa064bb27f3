"""Rate-limit configuration: from the deploy config's ``user_config``, live-changeable, one environment override."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

REQUESTS_PER_MINUTE_ENV = "RATE_LIMIT_PER_MINUTE"


class RateLimitConfig(BaseModel):
    """The limits, all per minute (a sliding window of 60 s)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    requests_per_minute: int = Field(60, ge=1, description="per principal")
    ip_requests_per_minute: int = Field(120, ge=1, description="per client IP, checked before the principal")
    tokens_per_minute: int = Field(100_000, ge=1, description="LLM tokens per principal")
    fail_open: bool = Field(True, description="admit (True) or refuse (False) while the limiter's store is down")


def apply_env(cfg: RateLimitConfig, environ: Mapping[str, str] | None = None) -> RateLimitConfig:
    """Return ``cfg`` with ``RATE_LIMIT_PER_MINUTE`` (when set and not empty) as ``requests_per_minute``.

    Raises:
        ValueError: The variable is not a positive integer; the message names it.
    """
    raw = (os.environ if environ is None else environ).get(REQUESTS_PER_MINUTE_ENV, "").strip()
    if not raw:
        return cfg
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{REQUESTS_PER_MINUTE_ENV} must be a positive integer, got {raw!r}")
    return cfg.model_copy(update={"requests_per_minute": value})


class LiveRateLimitConfig:
    """The current ``RateLimitConfig``, replaced whole by ``update``; pass ``get`` as the middleware's provider.

    Args:
        initial: A config, or its fields as a mapping (``user_config["rate_limit"]``).
    """

    def __init__(self, initial: RateLimitConfig | Mapping[str, Any] | None = None) -> None:
        self._current = self.update(initial or {})

    def get(self) -> RateLimitConfig:
        return self._current

    def update(self, value: RateLimitConfig | Mapping[str, Any]) -> RateLimitConfig:
        """Validate, apply the environment override, then swap (an invalid value changes nothing).

        Raises:
            pydantic.ValidationError: An unknown field or a bad value.
            ValueError: ``RATE_LIMIT_PER_MINUTE`` is invalid.
        """
        cfg = value if isinstance(value, RateLimitConfig) else RateLimitConfig.model_validate(value)
        self._current = apply_env(cfg)
        return self._current
