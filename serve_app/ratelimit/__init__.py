"""Rate limits: GCRA limiters (in-process, Redis), their live configuration and the HTTP middleware."""

from serve_app.ratelimit.config import LiveRateLimitConfig, RateLimitConfig, apply_env
from serve_app.ratelimit.limiter import InProcessRateLimiter, RateLimitDecision, RateLimiter, RedisRateLimiter

__all__ = [
    "InProcessRateLimiter",
    "LiveRateLimitConfig",
    "RateLimitConfig",
    "RateLimitDecision",
    "RateLimiter",
    "RedisRateLimiter",
    "apply_env",
]
