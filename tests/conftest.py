"""Fixtures shared by every tier.

The scripted LLM is a real OpenAI-compatible HTTP server on loopback, reached
through the same ``openai`` client code as production.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from serve_app.scripted_llm import ScriptedLLMConfig, ScriptedLLMServer

pytest_plugins = ["tests.support.pg_fixtures", "tests.support.prom"]


@pytest.fixture(scope="session")
def scripted_llm_server() -> Iterator[ScriptedLLMServer]:
    with ScriptedLLMServer(ScriptedLLMConfig(slow_token_delay_s=0.05)) as server:
        yield server


@pytest.fixture
def scripted_llm(scripted_llm_server: ScriptedLLMServer) -> ScriptedLLMServer:
    """The session's scripted LLM, with its request log cleared for this test."""
    state = scripted_llm_server.app.state
    state.requests.clear()
    state.finished.clear()
    state.aborted.clear()
    return scripted_llm_server
