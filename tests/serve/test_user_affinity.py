"""User affinity on a real Serve deployment: each user's calls to one replica, a busy user spread."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from agent.dto import ChatRequest
from serve_app.builder import AGENT_ROUTER

pytestmark = pytest.mark.serve

MAX_IMBALANCE = 3


@pytest.fixture(scope="module")
def who(serve_port: int) -> Any:
    """Three replicas routed as the Agent is; ``chat`` answers with the replica's id."""
    from ray import serve

    # NOTE: defined here, so Ray ships the class by value (the tests package is not on the replicas' path).
    @serve.deployment(
        num_replicas=3,
        max_ongoing_requests=64,
        ray_actor_options={"num_cpus": 0.05},
        request_router_config={
            "request_router_class": AGENT_ROUTER,
            "request_router_kwargs": {"max_imbalance": MAX_IMBALANCE},
        },
    )
    class Who:
        async def chat(self, request: ChatRequest, hold_s: float = 0.0) -> str:
            await asyncio.sleep(hold_s)
            return str(serve.get_replica_context().replica_id.unique_id)

    handle = serve.run(Who.bind(), name="affinity", route_prefix=None)
    try:
        yield handle
    finally:
        serve.delete("affinity")


async def test_each_users_calls_go_to_one_replica_and_users_spread_over_replicas(who: Any) -> None:
    users = [f"user-{i}" for i in range(12)]
    served: dict[str, set[str]] = {}
    for _ in range(4):
        for user in users:
            replica = await who.chat.remote(ChatRequest(message="hi", user_id=user))
            served.setdefault(user, set()).add(replica)
    assert all(len(replicas) == 1 for replicas in served.values()), served
    assert len({next(iter(r)) for r in served.values()}) >= 2, served
    # A call for no user is not pinned: 24 of them reach more than one replica.
    anonymous = {await who.chat.remote(ChatRequest(message="hi")) for _ in range(24)}
    assert len(anonymous) >= 2


async def test_a_busy_users_calls_spread_over_replicas_within_the_bound(who: Any) -> None:
    for _ in range(2):
        calls = [who.chat.remote(ChatRequest(message="hi", user_id="busy"), 1.0) for _ in range(24)]
        by_replica = Counter(await asyncio.gather(*calls))
        assert len(by_replica) == 3, by_replica
        assert max(by_replica.values()) - min(by_replica.values()) <= 2 * MAX_IMBALANCE, by_replica
        # Once the rush is over, the user is back on one replica at once (nothing left counted).
        # NOTE: Serve hands each call's completion to the router's loop (call_soon_threadsafe from
        # the transport's thread), so a result can reach the caller a moment before it is counted.
        await asyncio.sleep(0.2)
        assert len({await who.chat.remote(ChatRequest(message="hi", user_id="busy")) for _ in range(4)}) == 1
