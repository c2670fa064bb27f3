"""The baseline: the same agent core served by one plain FastAPI + uvicorn process.

This is the single-process architecture of the article the project grew from:
one event loop runs the HTTP layer, the reasoning loop, the tools and the
conversation store; the only other process is the LLM. The store is chosen as
the Serve app chooses it (``DATABASE_URL``, else SQLite in ``AGENTSERVE_DATA_DIR``),
so both stacks do the same work per turn.

Run it with ``python -m bench.baseline --port 8200 --llm-url http://127.0.0.1:8100/v1``.
"""

from __future__ import annotations

import argparse

import uvicorn
import uvloop
from fastapi import FastAPI

from agent.llm import LLMEndpoint, OpenAILLMClient
from agent.loop import Agent
from agent.ports import ConversationStore
from memory.factory import build_conversation_store
from memory.in_memory import InMemoryConversationStore
from serve_app.args import AgentServeArgs
from serve_app.http.app import create_app
from serve_app.inprocess import InProcessAgentService
from serve_app.settings import Settings
from tools import build_registry


def build_store(database_url: str | None) -> ConversationStore:
    """``memory`` for the in-process store; otherwise what the Agent deployment would build."""
    if database_url == "memory":
        return InMemoryConversationStore()
    settings = Settings()
    if database_url is None and settings.database_url is not None:
        database_url = settings.database_url.get_secret_value()
    return build_conversation_store(database_url, settings.agentserve_data_dir)


def build_baseline_app(llm_url: str, store: ConversationStore, model: str = "scripted") -> FastAPI:
    """The HTTP app over an in-process agent, with the Serve app's default args.

    Args:
        llm_url: The OpenAI-compatible base URL (ending in ``/v1``).
        store: The conversation store; set up by the caller.
        model: The model name to ask for.
    """
    args = AgentServeArgs()
    llm = OpenAILLMClient(LLMEndpoint(base_url=llm_url, model=model, max_retries=0))
    registry = build_registry()
    agent = Agent(llm, registry, store, args.agent, context_window=args.llm.context_window)
    return create_app(InProcessAgentService(agent, registry))


async def serve(a: argparse.Namespace) -> None:
    store = build_store(a.database_url)
    # NOTE: set up on the server's own loop: a store may hold loop-bound resources.
    await store.setup()
    config = uvicorn.Config(
        build_baseline_app(a.llm_url, store, a.model),
        host=a.host,
        port=a.port,
        http="httptools",
        access_log=False,
        log_level="warning",
    )
    try:
        await uvicorn.Server(config).serve()
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument("--llm-url", required=True, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8100/v1")
    parser.add_argument("--model", default="scripted")
    parser.add_argument("--database-url", help="as DATABASE_URL (sqlite:///<path>, postgresql://...), or 'memory'")
    uvloop.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
