"""Rate limiters by GCRA, in this process or in Redis (Ray-free, FastAPI-free).

GCRA (the generic cell rate algorithm) keeps one number per key: the
theoretical arrival time (TAT), the moment the key's budget is full again. A
limit of ``limit`` units per ``window_s`` costs ``interval = window_s / limit``
of TAT per unit, and a spend is admitted while ``TAT - window <= now``: up to
``limit`` units at once, then one per ``interval``. That is a sliding window
without a log of past requests.

Three uses of one state, and several states at once:

- ``hit(key, limit, window_s, cost)`` admits and spends ``cost`` units, or
  refuses and spends nothing (requests).
- ``hit(key, limit, window_s, cost=0)`` is the pre-check: it spends nothing and
  refuses only while the budget is overdrawn (LLM tokens, before a turn).
- ``charge(key, limit, window_s, cost)`` spends ``cost`` units unconditionally,
  into debt if need be (LLM tokens, counted only after the turn). Time pays the
  debt off; pre-checks refuse until it has.
- ``hit_all(buckets)`` is one decision over several buckets (a client IP, its
  principal, the principal's token budget): every bucket spends its cost if
  all of them fit, else none does. In Redis, that is one script call: one
  round trip and one atomic step per request, whatever the number of buckets.

Times are whole microseconds so the arithmetic is exact (in Python and in
Redis's Lua doubles alike): exactly ``limit`` simultaneous hits fit, never one
more. ``interval`` is rounded down to a whole microsecond (at least 1), which
makes the real window shorter by under ``limit`` microseconds.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

_US = 1_000_000


@dataclass(frozen=True, slots=True)
class RateLimitDecision:
    """One decision.

    Attributes:
        allowed: Admitted (``hit``), or fitted in the budget (``charge``).
        limit: The limit the decision was made against.
        remaining: Units that would still fit now.
        reset_s: Until the budget is full again.
        retry_after_s: Until the refused spend would fit (0 when allowed).
    """

    allowed: bool
    limit: int
    remaining: int
    reset_s: float
    retry_after_s: float


@dataclass(frozen=True, slots=True)
class Bucket:
    """One budget a decision spends from: ``cost`` units of ``limit`` per ``window_s`` under ``key``."""

    key: str
    limit: int
    window_s: float
    cost: int = 1


class RateLimiter(Protocol):
    """Where budgets are kept.

    Keys are opaque. ``limit`` and ``window_s`` come with every call, so a
    changed configuration applies to the next decision. The state is the
    fraction of the window spent, so that fraction survives a changed limit
    (half spent stays half spent) and refills at the new rate.
    """

    async def hit(self, key: str, limit: int, window_s: float, cost: int = 1) -> RateLimitDecision:
        """Spend ``cost`` units if they fit, else nothing; ``cost=0`` checks the budget is not overdrawn."""
        ...

    async def charge(self, key: str, limit: int, window_s: float, cost: int) -> RateLimitDecision:
        """Spend ``cost`` units, even past the limit; ``allowed`` says whether they fitted."""
        ...

    async def hit_all(self, buckets: Sequence[Bucket]) -> list[RateLimitDecision]:
        """One atomic decision: every bucket spends its cost if all fit, else none spends.

        Returns one decision per bucket, in order; the request is admitted when all
        are ``allowed``. A bucket that fitted in a refused decision reports its
        unspent budget.
        """
        ...

    async def close(self) -> None: ...


def _validate(limit: int, window_s: float, cost: int) -> int:
    if limit < 1 or window_s <= 0 or cost < 0:
        raise ValueError(f"rate limit needs limit >= 1, window_s > 0, cost >= 0 (got {limit}, {window_s}, {cost})")
    return round(window_s * _US)


def gcra(tat: int | None, now: int, limit: int, window_us: int, cost: int, charge: bool) -> tuple[int, list[int]]:
    """One GCRA step in microseconds: ``(new_tat, [allowed, remaining, reset_us, retry_us])``. Mirrors ``_LUA``."""
    interval = max(1, window_us // limit)
    tau = interval * limit
    tat = now if tat is None or tat < now else tat
    new_tat = tat + cost * interval
    allowed = new_tat - tau <= now
    retry = 0 if allowed else new_tat - tau - now
    if not allowed and not charge:
        new_tat = tat
    remaining = max(0, min(limit, (now + tau - new_tat) // interval))
    return new_tat, [int(allowed), remaining, new_tat - now, retry]


def gcra_all(
    tats: Sequence[int | None], now: int, specs: Sequence[tuple[int, int, int]], charge: bool
) -> tuple[list[int], list[list[int]]]:
    """GCRA over several buckets (``(limit, window_us, cost)`` each): all spend or none. Mirrors ``_LUA``.

    With ``charge`` every bucket spends, fitting or not. Returns the TATs to keep
    and, per bucket, ``[fits, remaining, reset_us, retry_us]``.
    """
    steps = [gcra(tat, now, *spec, charge=True) for tat, spec in zip(tats, specs, strict=True)]
    if charge or all(raw[0] for _, raw in steps):
        return [new_tat for new_tat, _ in steps], [raw for _, raw in steps]
    kept, raws = [], []
    for tat, (limit, window_us, _), (_, raw) in zip(tats, specs, steps, strict=True):
        interval = max(1, window_us // limit)
        state = now if tat is None or tat < now else tat
        remaining = max(0, min(limit, (now + interval * limit - state) // interval))
        kept.append(state)
        raws.append([raw[0], remaining, state - now, raw[3]])
    return kept, raws


def _decision(limit: int, raw: list[Any]) -> RateLimitDecision:
    allowed, remaining, reset_us, retry_us = (int(v) for v in raw)
    return RateLimitDecision(bool(allowed), limit, remaining, reset_us / _US, retry_us / _US)


class InProcessRateLimiter:
    """Budgets in a dict of this process (the embedded default; one replica).

    Args:
        clock_us: Monotonic microseconds (tests may pass a fake).
    """

    def __init__(self, clock_us: Callable[[], int] | None = None) -> None:
        self._clock = clock_us or (lambda: time.monotonic_ns() // 1000)
        self._tat: dict[str, int] = {}
        self._sweep_at = 1024

    async def charge(self, key: str, limit: int, window_s: float, cost: int) -> RateLimitDecision:
        return self._step([Bucket(key, limit, window_s, cost)], charge=True)[0]

    async def hit_all(self, buckets: Sequence[Bucket]) -> list[RateLimitDecision]:
        return self._step(buckets, charge=False)

    async def hit(self, key: str, limit: int, window_s: float, cost: int = 1) -> RateLimitDecision:
        return self._step([Bucket(key, limit, window_s, cost)], charge=False)[0]

    def _step(self, buckets: Sequence[Bucket], charge: bool) -> list[RateLimitDecision]:
        # NOTE: no await between reading and writing the TATs: atomic on the event loop.
        specs = [(b.limit, _validate(b.limit, b.window_s, b.cost), b.cost) for b in buckets]
        now = self._clock()
        tats, raws = gcra_all([self._tat.get(b.key) for b in buckets], now, specs, charge)
        for bucket, tat in zip(buckets, tats, strict=True):
            if tat > now:
                self._tat[bucket.key] = tat
        if len(self._tat) > self._sweep_at:
            self._tat = {k: t for k, t in self._tat.items() if t > now}  # a past TAT equals no entry
            self._sweep_at = max(1024, 2 * len(self._tat))
        return [_decision(b.limit, raw) for b, raw in zip(buckets, raws, strict=True)]

    async def close(self) -> None:
        self._tat.clear()


# KEYS: the buckets' keys. ARGV[1]: charge (0/1), then limit, window_us, cost per bucket.
# Same arithmetic as ``gcra_all``: every bucket spends if all fit (or on charge), else none.
# NOTE: the clock is the server's TIME, so replicas with skewed clocks share one timeline.
# NOTE: Redis Cluster needs every key of one call in one slot: give the prefix a hash tag ({...}).
_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local all_fit = true
local b = {}
for i = 1, #KEYS do
  local limit = tonumber(ARGV[3 * i - 1])
  local interval = math.max(1, math.floor(tonumber(ARGV[3 * i]) / limit))
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local new_tat = tat + tonumber(ARGV[3 * i + 1]) * interval
  local retry = new_tat - interval * limit - now
  if retry > 0 then all_fit = false else retry = 0 end
  b[i] = {limit, interval, tat, new_tat, retry}
end
local admitted = all_fit or ARGV[1] == '1'
local out = {}
for i = 1, #KEYS do
  local limit, interval, state, retry = b[i][1], b[i][2], b[i][3], b[i][5]
  if admitted then
    state = b[i][4]
    if state > now then
      redis.call('SET', KEYS[i], string.format('%d', state), 'PX', math.ceil((state - now) / 1000))
    end
  end
  local remaining = math.max(0, math.min(limit, math.floor((now + interval * limit - state) / interval)))
  out[i] = {retry == 0 and 1 or 0, remaining, state - now, retry}
end
return out
"""


class RedisRateLimiter:
    """Budgets in Redis, shared by every Ingress replica: one Lua script, one round trip per decision.

    Args:
        url: ``redis://...``.
        prefix: Prepended to every key (``<prefix>:<key>``).
        fail_open: When Redis fails, admit (True) or refuse (False). Public, so
            a reconfigure may change it.
        timeout_s: Connect and socket timeout; no retries, so a dead Redis costs
            at most about this long per decision. NOTE: a reply later than this
            is a failure too (the spend may have happened): under fail open an
            overloaded replica admits more than the limit.
        warn_interval_s: Redis failures are logged at most this often.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "agentserve:rl",
        fail_open: bool = True,
        timeout_s: float = 0.25,
        warn_interval_s: float = 30.0,
    ) -> None:
        self.redis: Any = redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
        )
        self._script = self.redis.register_script(_LUA)
        self.prefix = prefix
        self.fail_open = fail_open
        self.warn_interval_s = warn_interval_s
        self._last_warning = -math.inf
        self.fallbacks = 0  # decisions taken without Redis (fail open or closed)

    async def hit(self, key: str, limit: int, window_s: float, cost: int = 1) -> RateLimitDecision:
        return (await self._run([Bucket(key, limit, window_s, cost)], charge=False))[0]

    async def charge(self, key: str, limit: int, window_s: float, cost: int) -> RateLimitDecision:
        return (await self._run([Bucket(key, limit, window_s, cost)], charge=True))[0]

    async def hit_all(self, buckets: Sequence[Bucket]) -> list[RateLimitDecision]:
        return await self._run(buckets, charge=False)

    async def _run(self, buckets: Sequence[Bucket], charge: bool) -> list[RateLimitDecision]:
        args: list[int] = [int(charge)]
        for b in buckets:
            args += [b.limit, _validate(b.limit, b.window_s, b.cost), b.cost]
        try:
            raws = await self._script(keys=[f"{self.prefix}:{b.key}" for b in buckets], args=args)
        except (RedisError, OSError) as exc:  # TimeoutError is an OSError
            return self._fallback([b.limit for b in buckets], exc)
        return [_decision(b.limit, raw) for b, raw in zip(buckets, raws, strict=True)]

    def _fallback(self, limits: list[int], exc: BaseException) -> list[RateLimitDecision]:
        self.fallbacks += 1
        now = time.monotonic()
        if now - self._last_warning >= self.warn_interval_s:
            self._last_warning = now
            action = "admitting (fail open)" if self.fail_open else "refusing (fail closed)"
            logger.warning("rate limiter: Redis unavailable (%s: %s); %s", type(exc).__name__, exc, action)
        if self.fail_open:
            return [RateLimitDecision(True, limit, limit, 0.0, 0.0) for limit in limits]
        return [RateLimitDecision(False, limit, 0, 1.0, 1.0) for limit in limits]

    async def close(self) -> None:
        await self.redis.aclose()
