"""Serve application builders: the only place that composes deployments.

``serve run`` / ``serve deploy`` call these through ``import_path`` with the
config's ``args:`` block, which is validated strictly before anything starts.
Per-deployment options below are the code defaults; a config's
``deployments:`` section overrides them by name.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from deployments.agent import AgentDeployment
from deployments.embedding import EmbeddingDeployment
from deployments.ingress import IngressDeployment
from deployments.tool_executor import ToolExecutorDeployment
from serve_app.args import AgentServeArgs, LocalLLMArgs


def _autoscaling(min_r: int, max_r: int, target: float) -> dict[str, Any]:
    return {
        "min_replicas": min_r,
        "initial_replicas": min_r,
        "max_replicas": max_r,
        "target_ongoing_requests": target,
        "upscale_delay_s": 5,
        "downscale_delay_s": 60,
    }


# NOTE: measured when the model encoded each batch on the replica's user-code loop,
# blocking it. Serve's throughput-optimised mode (serve_app/cli.py) runs user code on the
# replica's main loop, where the gRPC server also takes requests in and sends replies:
# blocked there, requests reached the batch queue late and in clumps, and batches stayed
# small. On its own thread (Serve's default outside that mode) the main loop kept
# taking requests in while a batch encoded: under 64 one-text clients 130-145 →
# 188-195 texts/s, and a lone call 16.3-16.9 → 15.5-15.9 ms (docs/benchmarks.md).
# Batches now encode in a worker thread (deployments/batcher.py), the model itself in a
# child process (memory/encoder_process.py), and only a call alone on the replica waits
# for its vector on this loop; three runs with user code on the main loop were no
# different within the noise ("Tenth session", "Eleventh session"), so this stays as measured.
# A deployment's env_vars are merged with the app's runtime_env, so configs keep both.
EMBEDDING_ENV = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "1"}

# The Agent scales on CPU as well as on requests (its turns mostly wait on the LLM):
# replicas for 32 turns each or 0.75 of a core each, whichever asks for more.
AGENT_POLICY = {
    "policy_function": "serve_app.autoscaling:CpuOrRequestsPolicy",
    "policy_kwargs": {"target_cpu_per_replica": 0.75},
}

AGENT_ROUTER = "deployments.routing.UserAffinityRouter"

# NOTE: max_ongoing_requests is explicit everywhere: Ray 2.60's default of 5
# collapses throughput under concurrent load. Fractional CPUs let the whole app
# (and the local model) fit on 2 cores.
DEPLOYMENT_OPTIONS: dict[str, dict[str, Any]] = {
    "Ingress": {
        "max_ongoing_requests": 256,
        "autoscaling_config": _autoscaling(1, 2, 64),
        "ray_actor_options": {"num_cpus": 0.25},
        "graceful_shutdown_timeout_s": 60,
    },
    "Agent": {
        "max_ongoing_requests": 128,
        "autoscaling_config": {**_autoscaling(1, 4, 32), "policy": AGENT_POLICY},
        "ray_actor_options": {"num_cpus": 0.25},
        "graceful_shutdown_timeout_s": 60,
        # A user's calls go to one Agent replica while it holds at most 32 calls more than the
        # least busy one, so its copies of the user's memory table and sessions stay current
        # (deployments/routing.py; with 16, a saturated pair of replicas passed 15% of calls
        # on, with 32 under 1%: docs/benchmarks.md). A config's `request_router_config`
        # replaces it as a whole: the class and `request_router_kwargs: {max_imbalance: N}`
        # together, or Serve's default router (README, "User affinity").
        "request_router_config": {"request_router_class": AGENT_ROUTER},
    },
    "ToolExecutor": {
        "max_ongoing_requests": 128,
        "autoscaling_config": _autoscaling(1, 2, 32),
        "ray_actor_options": {"num_cpus": 0.1},
    },
    "Embedding": {
        "max_ongoing_requests": 256,
        "autoscaling_config": _autoscaling(1, 2, 64),
        "ray_actor_options": {"num_cpus": 0.25, "runtime_env": {"env_vars": EMBEDDING_ENV}},
    },
    "LocalLLM": {
        "max_ongoing_requests": 32,
        "num_replicas": 1,
        "ray_actor_options": {"num_cpus": 0.5},
    },
}


def build_app(args: dict[str, Any] | AgentServeArgs | None = None) -> Application:
    """Compose Ingress → Agent → {ToolExecutor, Embedding}.

    NOTE: Serve calls a config's builder with exactly one argument; keep it so.

    Args:
        args: The ``args:`` block of the config (``AgentServeArgs``); unknown
            keys are rejected.

    Returns:
        The bound application, for ``serve.run`` or a config's ``import_path``.
    """
    return build_app_with_options(args)


def build_app_with_options(
    args: dict[str, Any] | AgentServeArgs | None = None, options: dict[str, dict[str, Any]] | None = None
) -> Application:
    """``build_app`` with per-deployment option overrides, for Python callers.

    Args:
        args: As for ``build_app``.
        options: Deployment options by deployment name (a config file's
            ``deployments:`` section does the same for YAML).

    Returns:
        The bound application, for ``serve.run`` or a config's ``import_path``.
    """
    parsed = AgentServeArgs.model_validate(args or {})
    opts = {name: {**o, **(options or {}).get(name, {})} for name, o in DEPLOYMENT_OPTIONS.items()}
    tools = serve.deployment(ToolExecutorDeployment, name="ToolExecutor", **opts["ToolExecutor"]).bind(parsed.tools)
    embedding = serve.deployment(EmbeddingDeployment, name="Embedding", **opts["Embedding"]).bind(
        parsed.embedding.model_dump()
    )
    agent = serve.deployment(AgentDeployment, name="Agent", **opts["Agent"]).bind(
        tools, embedding, parsed.model_dump(mode="json")
    )
    return serve.deployment(IngressDeployment, name="Ingress", **opts["Ingress"]).bind(agent, tools)


def build_local_llm_app(args: dict[str, Any] | LocalLLMArgs | None = None) -> Application:
    """The bundled SmolLM2 model as an OpenAI-compatible app (route ``/llm`` by convention)."""
    # NOTE: imported here so the main app never needs llama-cpp-python installed.
    from deployments.local_llm import LocalLLMDeployment

    parsed = LocalLLMArgs.model_validate(args or {})
    return serve.deployment(LocalLLMDeployment, name="LocalLLM", **DEPLOYMENT_OPTIONS["LocalLLM"]).bind(
        parsed.model_dump()
    )
