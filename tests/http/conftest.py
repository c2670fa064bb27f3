from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from agent.config import AgentConfig
from agent.llm import LLMEndpoint, OpenAILLMClient
from agent.loop import Agent
from agent.semantic import SemanticMemory
from memory.in_memory import InMemoryConversationStore
from memory.vector_in_memory import InMemoryVectorMemory
from serve_app.http.app import create_app
from serve_app.inprocess import InProcessAgentService
from serve_app.scripted_llm import ScriptedLLMServer
from tests.support.auth import dev_auth
from tests.support.fake_embedder import HashingEmbedder
from tools import build_registry


@pytest.fixture
async def client(scripted_llm: ScriptedLLMServer) -> AsyncIterator[httpx.AsyncClient]:
    """The HTTP app in-process (ASGITransport) around the real core and the scripted LLM."""
    llm = OpenAILLMClient(LLMEndpoint(base_url=scripted_llm.base_url, model="scripted", max_retries=0))
    tools = build_registry(["tests.support.sample_tools:SleepTool"])
    memory = SemanticMemory(HashingEmbedder(), InMemoryVectorMemory())
    agent = Agent(llm, tools, InMemoryConversationStore(), AgentConfig(tool_timeout_s=1), memory=memory)
    app = create_app(InProcessAgentService(agent, tools), auth=dev_auth())
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c
