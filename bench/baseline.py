"""The baseline: the same agent core served by one plain FastAPI + uvicorn process.

This is the single-process architecture of the article the project grew from:
one event loop runs the HTTP layer, the reasoning loop, the tools, the
conversation store and the semantic memory (the embedding model runs in a worker
thread of the same process); the only other process is the LLM. The parts are
the ones ``AgentDeployment`` builds, chosen by the same settings (``DATABASE_URL``,
``REDIS_URL``, ``LANCEDB_URI``, ``AGENTSERVE_DATA_DIR``), with in-process objects
where the Serve app has handles, so both stacks do the same work per turn.

Run it with ``python -m bench.baseline --port 8200 --llm-url http://127.0.0.1:8100/v1``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os

import uvicorn
import uvloop
from fastapi import FastAPI

from agent.llm import LLMEndpoint, OpenAILLMClient
from agent.loop import Agent
from agent.semantic import SemanticMemory
from memory.embedder import SentenceTransformerEmbedder
from memory.factory import build_conversation_store
from memory.lance_memory import LanceVectorMemory
from memory.session_cache import CachedConversationStore, InProcessSessionCache, RedisSessionCache
from serve_app.args import AgentServeArgs
from serve_app.auth.config import AuthSettings
from serve_app.http.app import create_app
from serve_app.inprocess import InProcessAgentService
from serve_app.observability import PrometheusBackend, set_metrics_backend
from serve_app.observability.observer import MetricsObserver
from serve_app.ratelimit.config import LiveRateLimitConfig, RateLimitConfig
from serve_app.settings import ProcessSettings, Settings
from tools import build_registry


def build_agent(llm_url: str, args: AgentServeArgs, settings: Settings) -> Agent:
    """What ``AgentDeployment.__init__`` builds, in-process (keep the two in step).

    Args:
        llm_url: The OpenAI-compatible base URL (ending in ``/v1``).
        args: The Serve application's args (only ``agent`` and ``llm.context_window`` are used).
        settings: Where the stores live.
    """
    database_url = settings.database_url.get_secret_value() if settings.database_url else None
    redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
    store = CachedConversationStore(
        build_conversation_store(database_url, settings.agentserve_data_dir),
        RedisSessionCache(redis_url) if redis_url else InProcessSessionCache(),
    )
    lance_uri = settings.lancedb_uri or os.path.join(settings.agentserve_data_dir, "lancedb")
    observer = MetricsObserver()
    memory = SemanticMemory(
        SentenceTransformerEmbedder(),
        LanceVectorMemory(lance_uri, cache_mb=settings.lancedb_cache_mb, observer=observer),
        observer=observer,
    )
    llm = OpenAILLMClient(LLMEndpoint(base_url=llm_url, model="scripted", max_retries=0))
    registry = build_registry()
    return Agent(
        llm,
        registry,
        store,
        args.agent,
        context_window=args.llm.context_window,
        memory=memory,
        observer=observer,
    )


async def serve(a: argparse.Namespace) -> None:
    args = AgentServeArgs.model_validate({"agent": json.loads(a.agent)})
    agent = build_agent(a.llm_url, args, Settings())
    set_metrics_backend(PrometheusBackend())  # no Ray here: /metrics serves the same names
    ProcessSettings().apply()  # the collector thresholds every replica applies
    # NOTE: set up on the server's own loop: a store may hold loop-bound resources.
    await agent.store.setup()
    if agent.memory is not None:
        await agent.memory.store.setup()
    # As every Serve replica after its constructor (Ray's RAY_SERVE_FREEZE_GC_ON_STARTUP):
    # the start-up objects, the sentence model's among them, are left out of later full
    # passes of the collector, which walked them for 55-130 ms here (bench.turn_phases).
    gc.collect()
    gc.freeze()
    app: FastAPI = create_app(
        InProcessAgentService(agent, agent.tools),
        auth=AuthSettings(_env_file=None, auth_mode="disabled"),
        metrics_path="/metrics",
        # One client IP sends every request: rate limits off, as in the Serve stack.
        rate_limits=LiveRateLimitConfig(RateLimitConfig(enabled=False)),
    )
    config = uvicorn.Config(app, host=a.host, port=a.port, http="httptools", access_log=False, log_level="warning")
    try:
        await uvicorn.Server(config).serve()
    finally:
        if agent.memory is not None:
            await agent.memory.close(timeout_s=10)
        await agent.store.close()
        if agent.memory is not None:
            await agent.memory.store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument("--llm-url", required=True, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8100/v1")
    parser.add_argument("--agent", default="{}", help="AgentConfig overrides as JSON, as the app's args.agent")
    uvloop.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
