"""Route each Agent call to the replica that last served its user, within a bound on load.

An Agent replica keeps each user's semantic-memory table in its memory (read once, then
kept current by its own writes: ``memory/lance_memory.py``) and each session's recent
history (``memory/session_cache.py``). Serve's default router spreads calls at random, so
with two Agent replicas a user's turns alternate between them, each replica's copy falls
behind the other's writes, and searches go back to reading the table or to LanceDB
(docs/benchmarks.md, "Seventeenth session"). ``UserAffinityRouter`` is Ray's consistent-hash
router (``ray.serve.experimental.consistent_hash_router``: a hash ring over the replicas, the
same in every caller's process, so every Ingress replica sends a user to the same Agent
replica, and adding a replica moves only its share of users) keyed on the call's user
instead of a session header, with a bound on load: a replica more than ``max_imbalance``
calls busier than the least busy one passes the call to the next replica on the ring. One
busy user (a service account acting for everyone, a load test) spreads over replicas
instead of pinning one, and the autoscaler's new replicas get work.

NOTE: Ray 2.60 marks custom request routers alpha; the pin in pyproject.toml holds the
version this is tested against (tests/unit/test_user_affinity.py, tests/serve/test_user_affinity.py).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ray.serve.experimental.consistent_hash_router import ConsistentHashRouter

R = TypeVar("R")

# The Agent's methods that act for one user, and where that user is among their positional
# arguments: a ChatRequest (its ``user_id``) or the ``user_id`` string itself. Kept equal to
# deployments/agent.py's signatures by tests/unit/test_user_affinity.py.
USER_ARGUMENT: dict[str, int] = {
    "chat": 0,
    "stream": 0,
    "stream_batches": 0,
    "list_sessions": 0,
    "add_memory": 0,
    "search_memory": 0,
    "delete_memory": 0,
    "get_session": 1,
    "list_messages": 1,
    "delete_session": 1,
}
DEFAULT_MAX_IMBALANCE = 32


def user_of_call(method: str, args: Sequence[Any]) -> str | None:
    """The user an Agent call acts for, or None (health checks, tool listing)."""
    index = USER_ARGUMENT.get(method)
    if index is None or index >= len(args):
        return None
    arg = args[index]
    user = getattr(arg, "user_id", arg)
    return user if isinstance(user, str) and user else None


def pick(ranked: Sequence[R], everyone: Sequence[R], load: Callable[[R], int], max_imbalance: int) -> list[R]:
    """``ranked`` (the ring's order for this user) with the replica to try first at its head.

    The first in ring order whose load is within ``max_imbalance`` of the least loaded replica
    goes first; when none of the ranked is, the least loaded of ``everyone`` does.
    """
    if not ranked:
        return []
    floor = min(load(r) for r in everyone) if everyone else 0
    first = next((r for r in ranked if load(r) <= floor + max_imbalance), None)
    if first is None:
        first = min(everyone, key=load)
    return [first, *(r for r in ranked if r is not first)]


class UserAffinityRouter(ConsistentHashRouter):
    """Ray's consistent-hash router keyed on the Agent call's user, with a bound on load.

    Kwargs (``request_router_config.request_router_kwargs``): ``max_imbalance`` (32): how many
    more of this caller's ongoing calls than the least busy replica a user's replica may hold
    before the next one on the ring takes the call; ``num_virtual_nodes`` (100) as Ray's router.
    Every replica is on each user's list, so a full replica's calls go round the ring, not
    back to the queue.
    """

    # How long a routed call counts toward its replica's load before it is sent: a burst of
    # calls is routed before any of them is sent (and counted as sent).
    UNSENT_FOR_S = 1.0

    def initialize_state(self, **kwargs: Any) -> None:
        max_imbalance = kwargs.pop("max_imbalance", DEFAULT_MAX_IMBALANCE)
        if not isinstance(max_imbalance, int) or isinstance(max_imbalance, bool) or max_imbalance < 0:
            raise ValueError(f"max_imbalance must be a non-negative int, got {max_imbalance!r}")
        self._max_imbalance = max_imbalance
        self._unsent: dict[Any, deque[float]] = {}  # replica id -> when each call routed to it was
        self._ongoing: dict[Any, int] = {}  # replica id -> calls this caller sent it, not finished
        kwargs.setdefault("num_fallback_replicas", 1_000_000)  # the whole ring: see pick()
        super().initialize_state(**kwargs)

    def _routing_key(self, pending_request: Any) -> str | None:
        if pending_request is None:
            return None
        metadata = pending_request.metadata
        user = user_of_call(metadata.call_method, pending_request.args)
        # NOTE: a call for no user spreads as Ray's router spreads session-less calls.
        return f"user:{user}" if user is not None else metadata.internal_request_id

    async def choose_replicas(self, candidate_replicas: list[Any], pending_request: Any = None) -> list[list[Any]]:
        ranks = await super().choose_replicas(candidate_replicas, pending_request)
        ranked = [rank[0] for rank in ranks if len(rank) == 1]
        if not ranked or len(ranked) != len(ranks):  # no replicas, or no key (all candidates at once)
            return ranks

        # NOTE: this caller's own calls on each replica, sent and not finished or routed and
        # not sent yet. Not Serve's queue-length cache: a replica's count reported on a send
        # can overwrite finishes seen meanwhile, and after a burst such leftovers kept a
        # user off its replica for the cache's 10 s. Each caller (Ingress replica) balances
        # its own calls, so their sum is balanced too; a full replica still refuses calls.
        expired = time.monotonic() - self.UNSENT_FOR_S
        loads: dict[Any, int] = {}
        for replica in (*candidate_replicas, *ranked):  # the ring's may include replicas not offered
            if replica.replica_id in loads:
                continue
            unsent = self._unsent.get(replica.replica_id)
            while unsent and unsent[0] < expired:
                unsent.popleft()
            loads[replica.replica_id] = self._ongoing.get(replica.replica_id, 0) + len(unsent or ())

        order = pick(ranked, candidate_replicas, lambda r: loads[r.replica_id], self._max_imbalance)
        self._unsent.setdefault(order[0].replica_id, deque()).append(time.monotonic())
        return [[r] for r in order]

    def on_send_request(self, replica_id: Any) -> None:
        super().on_send_request(replica_id)
        unsent = self._unsent.get(replica_id)
        if unsent:
            unsent.popleft()  # sent now
        self._ongoing[replica_id] = self._ongoing.get(replica_id, 0) + 1

    def on_request_completed(self, replica_id: Any, internal_request_id: str) -> None:
        # NOTE: Serve calls this once per sent call however it ends (a stream when it ends,
        # a refused call when cancelled); also for a call that failed before it was sent.
        super().on_request_completed(replica_id, internal_request_id)
        if self._ongoing.get(replica_id, 0) > 0:
            self._ongoing[replica_id] -= 1

    def update_replicas(self, replicas: list[Any]) -> None:
        super().update_replicas(replicas)
        for state in (self._unsent, self._ongoing):
            for gone in set(state) - self._replica_id_set:
                del state[gone]

    def on_replica_actor_died(self, replica_id: Any) -> None:
        super().on_replica_actor_died(replica_id)
        self._unsent.pop(replica_id, None)
        self._ongoing.pop(replica_id, None)
