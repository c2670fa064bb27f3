"""The baseline: the same agent core served by one plain FastAPI + uvicorn process.

This is the single-process architecture of the article the project grew from:
one event loop runs the HTTP layer, the reasoning loop, the tools and the
conversation store; the only other process is the LLM.

Run it with ``python -m bench.baseline --port 8200 --llm-url http://127.0.0.1:8100/v1``.
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI

from agent.llm import LLMEndpoint, OpenAILLMClient
from agent.loop import Agent
from memory.in_memory import InMemoryConversationStore
from serve_app.http.app import create_app
from serve_app.inprocess import InProcessAgentService
from tools import build_registry


def build_baseline_app(llm_url: str, model: str = "scripted") -> FastAPI:
    """The HTTP app over an in-process agent, with the Serve app's defaults.

    Args:
        llm_url: The OpenAI-compatible base URL (ending in ``/v1``).
        model: The model name to ask for.
    """
    llm = OpenAILLMClient(LLMEndpoint(base_url=llm_url, model=model, max_retries=0))
    registry = build_registry()
    agent = Agent(llm, registry, InMemoryConversationStore())
    return create_app(InProcessAgentService(agent, registry))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument(
        "--llm-url", required=True, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8100/v1"
    )
    parser.add_argument("--model", default="scripted")
    a = parser.parse_args()
    uvicorn.run(
        build_baseline_app(a.llm_url, a.model),
        host=a.host,
        port=a.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
