"""The Agent's user-affinity routing: whose call it is, and which replica takes it (no Ray cluster)."""

from __future__ import annotations

import inspect

import pytest

from agent.dto import ChatRequest
from deployments.agent import AgentDeployment
from deployments.routing import USER_ARGUMENT, pick, user_of_call
from serve_app.builder import AGENT_ROUTER, DEPLOYMENT_OPTIONS


def test_every_agent_method_acting_for_a_user_is_keyed_on_its_user_argument() -> None:
    keyed = {}
    for name, method in inspect.getmembers(AgentDeployment, inspect.isfunction):
        if name.startswith("_"):
            continue
        params = [p for p in inspect.signature(method).parameters.values() if p.name != "self"]
        for i, p in enumerate(params):
            if p.name in ("user_id", "request"):
                keyed[name] = i
                break
    assert keyed == USER_ARGUMENT


def test_the_user_of_a_call_comes_from_its_request_or_its_user_id_argument() -> None:
    request = ChatRequest(message="hi", user_id="alice")
    assert user_of_call("chat", [request]) == "alice"
    assert user_of_call("stream_batches", [request]) == "alice"
    assert user_of_call("search_memory", ["bob", "query", 5]) == "bob"
    assert user_of_call("list_messages", ["s-1", "carol", 20, None]) == "carol"
    assert user_of_call("health", []) is None
    assert user_of_call("list_tools", []) is None
    assert user_of_call("chat", []) is None  # a malformed call is routed like any other
    assert user_of_call("chat", [ChatRequest(message="hi")]) is None  # no user: spread


def test_the_users_replica_takes_the_call_while_within_the_bound() -> None:
    queues = {"a": 20, "b": 5, "c": 4}
    assert pick(["a", "b", "c"], ["a", "b", "c"], queues.__getitem__, max_imbalance=16) == ["a", "b", "c"]


def test_a_replica_past_the_bound_passes_the_call_to_the_next_on_the_ring() -> None:
    queues = {"a": 21, "b": 9, "c": 4}
    assert pick(["a", "b", "c"], ["a", "b", "c"], queues.__getitem__, max_imbalance=16) == ["b", "a", "c"]
    queues = {"a": 21, "b": 21, "c": 4}
    assert pick(["a", "b", "c"], ["a", "b", "c"], queues.__getitem__, max_imbalance=16) == ["c", "a", "b"]


def test_when_no_ranked_replica_is_within_the_bound_the_least_loaded_goes_first() -> None:
    queues = {"a": 40, "b": 30, "c": 2}
    # The ring gave only a and b (a shorter fallback list): c is the least loaded of everyone.
    assert pick(["a", "b"], ["a", "b", "c"], queues.__getitem__, max_imbalance=16) == ["c", "a", "b"]


@pytest.mark.parametrize("bound", [0, 3])
def test_a_busy_user_fills_replicas_evenly_within_the_bound(bound: int) -> None:
    queues = {"a": 0, "b": 0, "c": 0}
    for _ in range(60):
        first = pick(["b", "c", "a"], ["a", "b", "c"], queues.__getitem__, max_imbalance=bound)[0]
        queues[first] += 1
    assert max(queues.values()) - min(queues.values()) <= bound + 1
    assert sum(queues.values()) == 60


def test_the_agent_deployment_routes_with_the_user_affinity_router() -> None:
    assert DEPLOYMENT_OPTIONS["Agent"]["request_router_config"]["request_router_class"] == AGENT_ROUTER
    module, _, name = AGENT_ROUTER.rpartition(".")
    assert getattr(__import__(module, fromlist=[name]), name).__name__ == "UserAffinityRouter"


@pytest.mark.parametrize("bad", [-1, 2.5, "8", True])
def test_a_bad_max_imbalance_is_refused_naming_it(bad: object) -> None:
    from deployments.routing import UserAffinityRouter

    router = object.__new__(UserAffinityRouter)  # initialize_state alone: no Serve handle needed
    with pytest.raises(ValueError, match="max_imbalance"):
        router.initialize_state(max_imbalance=bad)


def test_the_whole_ring_is_the_users_list_unless_told_otherwise() -> None:
    from deployments.routing import DEFAULT_MAX_IMBALANCE, UserAffinityRouter

    router = object.__new__(UserAffinityRouter)
    router._deployment_id = "Agent"  # read by the parent's log line
    router.initialize_state()
    assert router._max_imbalance == DEFAULT_MAX_IMBALANCE
    assert router._num_fallback_replicas >= 1_000
    router.initialize_state(max_imbalance=4, num_fallback_replicas=1)
    assert (router._max_imbalance, router._num_fallback_replicas) == (4, 1)
