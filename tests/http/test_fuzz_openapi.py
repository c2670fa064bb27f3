"""Fuzz every operation of the OpenAPI document against the running app (schemathesis).

The app is built as the ``client`` fixture builds it: the real core (agent loop,
tools, in-memory stores and semantic memory) behind the real HTTP layer, against
the scripted OpenAI-compatible LLM server, authentication disabled. Schemathesis
reads ``/openapi.json`` and, per operation, sends the schema's examples, its
coverage cases and ``MAX_EXAMPLES`` generated requests, valid and invalid, with
a fixed seed (derandomized). Every response must be:

- no server error (5xx),
- a status code the operation declares,
- in a content type declared for that status,
- valid against the schema declared for that status and content type.

Notes:
- Half the generated cases are steered at what exists (``seed``/``steer``): the
  served model, a stored session, a memory, a tool, an admin API key (API keys
  are looked up in the conversation store, as in production; authentication
  stays disabled). Random values never name one, so the success answers of
  ``/v1/chat/completions``, the lookups and the key routes would go unchecked.
- Rate limits are raised out of reach for the main run: a fuzz run is hundreds of
  requests from one address, and past the first 120 every answer would be a 429,
  so the routes behind the limiter would go untested. A second, short run
  against a guarded app (a 64-byte body limit, one request a minute) covers the
  413 and 429 answers of every operation; another test covers the 415.
- The SSE routes (``/api/chat/stream``, and ``/v1/chat/completions`` with
  ``stream: true``) stay in: schemathesis reads an event stream up to its event
  limit, the 5xx/status/content-type checks apply as to any route, and their
  error answers (before the stream starts) are JSON with a schema. A 200
  ``text/event-stream`` has no schema, so its events are not validated here;
  ``test_chat_routes``/``test_openai_compat`` check their shape.
- The scripted LLM acts on commands at the start of a message (``hang:``,
  ``slow:``, ``fail:``, ``tool:``, ``loop``): a generated message that is one
  gets a prefix (``defuse``), so a run cannot hang, and a 5xx is never one we
  asked the LLM for. Anything else is echoed ("You said: ...").
- The fake embedder maps a text without a word (``[a-z0-9]+``, e.g. ``":"``) to
  the zero vector, which the vector store refuses (a ValueError, so a 500 from
  ``POST /api/memory`` and ``GET /api/memory/search``). A real embedder
  (normalised sentence-transformers) never returns one, so here such a text gets
  a fixed direction instead (``NonZeroHashingEmbedder``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI

from agent.config import AgentConfig
from agent.llm import LLMEndpoint, OpenAILLMClient
from agent.loop import Agent
from agent.semantic import SemanticMemory
from memory.in_memory import InMemoryConversationStore
from memory.vector_in_memory import InMemoryVectorMemory
from serve_app.auth.api_keys import create_api_key
from serve_app.http.app import create_app
from serve_app.inprocess import InProcessAgentService
from serve_app.ratelimit.config import LiveRateLimitConfig
from serve_app.scripted_llm import ScriptedLLMServer
from tests.http.fuzz_support import CHECKS, FUZZ_SETTINGS, SEEDED, defuse, defused, seed_through, steer_half_the_cases
from tests.support.auth import dev_auth
from tests.support.fake_embedder import HashingEmbedder
from tools import build_registry

MAX_EXAMPLES = 25
UNLIMITED = {"requests_per_minute": 1_000_000, "ip_requests_per_minute": 1_000_000, "tokens_per_minute": 10**9}
GUARDED = {"requests_per_minute": 1, "ip_requests_per_minute": 1}
GUARDED_BODY_BYTES = 64


class NonZeroHashingEmbedder(HashingEmbedder):
    """The fake embedder, but a text without a word gets a fixed unit vector, not the zero vector."""

    @staticmethod
    def _one(text: str) -> list[float]:
        vec = HashingEmbedder._one(text)
        if not any(vec):
            vec[0] = 1.0
        return vec


def build_app(
    llm_base_url: str,
    *,
    store: InMemoryConversationStore | None = None,
    rate_limits: dict[str, int] = UNLIMITED,
    max_body_bytes: int = 1_000_000,
) -> FastAPI:
    """The app as ``tests/http/conftest.py::client`` builds it; limits apart, and API keys from ``store``."""
    llm = OpenAILLMClient(LLMEndpoint(base_url=llm_base_url, model="scripted", max_retries=0))
    tools = build_registry(["tests.support.sample_tools:SleepTool"])
    memory = SemanticMemory(NonZeroHashingEmbedder(), InMemoryVectorMemory())
    store = store or InMemoryConversationStore()
    agent = Agent(llm, tools, store, AgentConfig(tool_timeout_s=1), memory=memory)
    return create_app(
        InProcessAgentService(agent, tools),
        auth=dev_auth(),
        rate_limits=LiveRateLimitConfig(rate_limits),
        key_store=store,
        max_body_bytes=max_body_bytes,
    )


def test_defuse_turns_scripted_commands_into_plain_text() -> None:
    for command in ["hang: 30", " slow: 9", "fail: 500", "tool: sleep {}", "loop", "loop "]:
        assert defused(command) == "x " + command
    for text in ["hello", "looping", "what is hang: 3", 7, None]:
        assert defused(text) == text


def seed(app: FastAPI, store: InMemoryConversationStore) -> FastAPI:
    """Stored sessions, a memory and API keys, so the routes that look things up find some."""
    admin = asyncio.run(create_api_key(store, "fuzz-admin", "fuzz", ["admin"]))
    spare = asyncio.run(create_api_key(store, "fuzz-admin", "revoked by the fuzzer", ["chat"]))
    SEEDED.update(
        admin_key=admin.key, spare_key_id=spare.record.id, session="ses_fuzz", spare_session="ses_fuzz_delete"
    )
    with schemathesis.python.asgi.get_client(app) as c:
        seed_through(c)
    return app


@pytest.fixture(scope="module")
def fuzz_app(scripted_llm_server: ScriptedLLMServer) -> FastAPI:
    store = InMemoryConversationStore()
    return seed(build_app(scripted_llm_server.base_url, store=store), store)


@pytest.fixture(scope="module")
def guarded_app(scripted_llm_server: ScriptedLLMServer) -> FastAPI:
    return build_app(scripted_llm_server.base_url, rate_limits=GUARDED, max_body_bytes=GUARDED_BODY_BYTES)


# NOTE: the document is read at collection, from the same build (the LLM is not reached for it):
# ``schemathesis.pytest.from_fixture`` fails on pytest 9 (it sets ``Function._nodeid``, which is
# gone), so the app that answers comes from a fixture and is passed to each call.
schema = schemathesis.openapi.from_dict(build_app("http://127.0.0.1:9/v1").openapi())


steer_half_the_cases(schema)


@schema.parametrize()
@hypothesis.settings(FUZZ_SETTINGS, max_examples=MAX_EXAMPLES)
def test_every_operation_answers_as_documented(case: schemathesis.Case, fuzz_app: FastAPI) -> None:
    defuse(case)
    case.call_and_validate(checks=CHECKS, app=fuzz_app)


@schema.parametrize()
@hypothesis.settings(FUZZ_SETTINGS, max_examples=5, phases=[hypothesis.Phase.generate])
def test_guarded_answers_as_documented(case: schemathesis.Case, guarded_app: FastAPI) -> None:
    """Past the body limit (413) and the rate limit (429): still documented, still in the declared shape."""
    defuse(case)
    case.call_and_validate(checks=CHECKS, app=guarded_app)


def _post_operations() -> list[Any]:
    return [op.ok() for op in schema.get_all_operations() if op.ok().method.upper() == "POST" and op.ok().body]


@pytest.mark.parametrize("operation", _post_operations(), ids=lambda op: op.label)
def test_a_body_that_is_not_json_is_a_documented_415(operation: Any, fuzz_app: FastAPI) -> None:
    path_parameters = {p.name: "x" for p in operation.path_parameters}
    case = operation.Case(path_parameters=path_parameters)
    response = case.call_and_validate(
        checks=CHECKS, app=fuzz_app, headers={"Content-Type": "text/plain"}, data=b"hello"
    )
    assert response.status_code == 415
    body = response.json()["error"]
    if operation.path.startswith("/v1/"):  # OpenAI's error shape
        assert body["type"] == "invalid_request_error" and body["code"] == "unsupported_media_type"
    else:
        assert body["type"] == "unsupported_media_type" and body["request_id"]
