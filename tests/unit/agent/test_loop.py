"""The reasoning loop against the scripted LLM over real HTTP, with in-process tools."""

from __future__ import annotations

import json

import pytest

from agent.config import AgentConfig
from agent.dto import ChatRequest, Role
from agent.errors import LLMUnavailableError
from agent.events import DoneEvent, ErrorEvent, MessageEvent, TokenEvent, ToolCallEvent, ToolResultEvent
from agent.llm import LLMEndpoint, OpenAILLMClient
from agent.loop import Agent
from memory.in_memory import InMemoryConversationStore
from serve_app.scripted_llm import ScriptedLLMServer
from tools import build_registry


def make_agent(server: ScriptedLLMServer, **cfg: object) -> Agent:
    llm = OpenAILLMClient(LLMEndpoint(base_url=server.base_url, model="scripted", max_retries=0))
    tools = build_registry(["tests.support.sample_tools:SleepTool"])
    return Agent(llm, tools, InMemoryConversationStore(), AgentConfig(**cfg))  # type: ignore[arg-type]


async def test_calculator_question_gets_the_right_number(scripted_llm: ScriptedLLMServer) -> None:
    agent = make_agent(scripted_llm)
    resp = await agent.chat(ChatRequest(message="What is 17*23?"))
    assert "391" in resp.response
    assert [c.name for c in resp.tool_calls] == ["calculator"]
    assert resp.tool_calls[0].result == "391"
    assert resp.usage.total_tokens > 0 and resp.usage.prompt_tokens > 0
    # two LLM calls: one asking for the tool, one answering with its result
    reqs = scripted_llm.app.state.requests
    assert len(reqs) == 2
    assert reqs[0]["tools"][0]["function"]["name"] in {"calculator", "current_time", "sleep"}
    tool_msg = reqs[1]["messages"][-1]
    assert tool_msg["role"] == "tool" and tool_msg["content"] == "391"


async def test_stream_events_come_in_order(scripted_llm: ScriptedLLMServer) -> None:
    agent = make_agent(scripted_llm)
    events = [e async for e in agent.stream(ChatRequest(message="calc: 2+3*4"))]
    kinds = [e.type for e in events]
    assert kinds[0] == "tool_call" and kinds[1] == "tool_result"
    assert kinds[-2:] == ["message", "done"]
    assert all(k == "token" for k in kinds[2:-2]) and "token" in kinds
    call, result = events[0], events[1]
    assert isinstance(call, ToolCallEvent) and json.loads(call.arguments) == {"expression": "2+3*4"}
    assert isinstance(result, ToolResultEvent) and result.content == "14" and result.id == call.id
    text = "".join(e.text for e in events if isinstance(e, TokenEvent))
    msg, done = events[-2], events[-1]
    assert isinstance(msg, MessageEvent) and msg.content == text == "The result is 14."
    assert isinstance(done, DoneEvent) and done.message_id == msg.message_id and done.steps == 2


async def test_history_carries_over_within_a_session(scripted_llm: ScriptedLLMServer) -> None:
    agent = make_agent(scripted_llm)
    first = await agent.chat(ChatRequest(message="hello there", user_id="u1"))
    await agent.chat(ChatRequest(message="again", session_id=first.session_id, user_id="u1"))
    sent = scripted_llm.app.state.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[1]["content"] == "hello there" and sent[2]["content"] == "You said: hello there"


async def test_session_of_another_user_is_not_found(scripted_llm: ScriptedLLMServer) -> None:
    agent = make_agent(scripted_llm)
    first = await agent.chat(ChatRequest(message="hi", user_id="alice"))
    events = [e async for e in agent.stream(ChatRequest(message="hi", session_id=first.session_id, user_id="bob"))]
    assert len(events) == 1 and isinstance(events[0], ErrorEvent) and events[0].error_type == "not_found"


async def test_max_steps_ends_with_a_clear_message(scripted_llm: ScriptedLLMServer) -> None:
    agent = make_agent(scripted_llm, max_steps=3)
    resp = await agent.chat(ChatRequest(message="loop"))
    assert resp.finish_reason == "max_steps"
    assert "3 reasoning steps" in resp.response
    assert len(resp.tool_calls) == 3
    assert len(scripted_llm.app.state.requests) == 3


async def test_provider_5xx_becomes_core_error(scripted_llm: ScriptedLLMServer) -> None:
    agent = make_agent(scripted_llm)
    with pytest.raises(LLMUnavailableError):
        await agent.chat(ChatRequest(message="fail: 503"))
    events = [e async for e in agent.stream(ChatRequest(message="fail: 500"))]
    assert [e.type for e in events] == ["error"]
    assert isinstance(events[0], ErrorEvent) and events[0].error_type == "llm_unavailable"


async def test_a_failed_turn_stores_nothing(scripted_llm: ScriptedLLMServer) -> None:
    agent = make_agent(scripted_llm)
    ok = await agent.chat(ChatRequest(message="first", user_id="u"))
    with pytest.raises(LLMUnavailableError):
        await agent.chat(ChatRequest(message="fail: 502", session_id=ok.session_id, user_id="u"))
    stored = await agent.store.history(ok.session_id, 10)
    assert [(m.role, m.content) for m in stored] == [(Role.USER, "first"), (Role.ASSISTANT, "You said: first")]


async def test_a_turn_is_stored_whole(scripted_llm: ScriptedLLMServer) -> None:
    agent = make_agent(scripted_llm)
    resp = await agent.chat(ChatRequest(message="calc: 2*21", user_id="u"))
    stored = await agent.store.history(resp.session_id, 10)
    assert [m.role for m in stored] == [Role.USER, Role.ASSISTANT, Role.TOOL, Role.ASSISTANT]
    assert stored[1].tool_calls[0].name == "calculator" and stored[2].content == "42"
    assert stored[-1].id == resp.message_id and stored[-1].usage is not None


async def test_idempotent_retry_returns_the_stored_reply(scripted_llm: ScriptedLLMServer) -> None:
    agent = make_agent(scripted_llm)
    req = ChatRequest(message="calc: 5*5", user_id="u", idempotency_key="key-1")
    first = await agent.chat(req)
    calls = len(scripted_llm.app.state.requests)
    again = await agent.chat(req)
    assert again == first
    assert len(scripted_llm.app.state.requests) == calls  # the turn did not run again
    events = [e async for e in agent.stream(req)]
    assert [e.type for e in events] == ["message", "done"] and events[0].content == first.response  # type: ignore[union-attr]
    assert len(await agent.store.history(first.session_id, 50)) == 4  # stored once
    # the same key from another user is another turn
    other = await agent.chat(ChatRequest(message="calc: 5*5", user_id="v", idempotency_key="key-1"))
    assert other.session_id != first.session_id


async def test_context_window_drops_old_history(scripted_llm: ScriptedLLMServer) -> None:
    llm = OpenAILLMClient(LLMEndpoint(base_url=scripted_llm.base_url, model="scripted", max_retries=0))
    agent = Agent(llm, build_registry(), InMemoryConversationStore(), AgentConfig(max_tokens=50), context_window=200)
    first = await agent.chat(ChatRequest(message="a" * 200, user_id="u"))
    for i in range(3):
        await agent.chat(ChatRequest(message=f"turn {i}", session_id=first.session_id, user_id="u"))
    sent = scripted_llm.app.state.requests[-1]["messages"]
    assert sent[0]["role"] == "system" and sent[-1]["content"] == "turn 2"
    assert all(m.get("content") != "a" * 200 for m in sent)  # the long first turn no longer fits


async def test_tool_timeout_reaches_the_llm_as_an_error(scripted_llm: ScriptedLLMServer) -> None:
    agent = make_agent(scripted_llm, tool_timeout_s=0.2)
    resp = await agent.chat(ChatRequest(message='tool: sleep {"seconds": 5}'))
    assert resp.tool_calls[0].is_error and "timed out after 0.2s" in (resp.tool_calls[0].result or "")
    assert "timed out" in resp.response  # the LLM saw the error and answered from it


async def test_calls_of_one_step_run_concurrently(scripted_llm: ScriptedLLMServer) -> None:
    llm = OpenAILLMClient(LLMEndpoint(base_url=scripted_llm.base_url, model="scripted", max_retries=0))
    tools = build_registry(["tests.support.probe_tools:RendezvousTool"])
    agent = Agent(llm, tools, InMemoryConversationStore(), AgentConfig(tool_timeout_s=5))
    # each call waits until all three are running at once: sequential execution would time out
    msg = "tool: " + "; ".join(f'rendezvous {{"parties": 3, "key": "k{i}"}}' for i in range(3))
    resp = await agent.chat(ChatRequest(message=msg))
    assert [c.result for c in resp.tool_calls] == ["met 3", "met 3", "met 3"]


async def test_invalid_tool_arguments_reach_the_llm(scripted_llm: ScriptedLLMServer) -> None:
    agent = make_agent(scripted_llm)
    resp = await agent.chat(ChatRequest(message='tool: calculator {"expr": "1+1"}'))
    call = resp.tool_calls[0]
    assert call.is_error and "expression" in (call.result or "")


async def test_closing_the_stream_cancels_the_turn(scripted_llm: ScriptedLLMServer) -> None:
    agent = make_agent(scripted_llm)
    stream = agent.stream(ChatRequest(message="slow: 100"))
    first = await anext(stream)
    assert first.type == "token"
    await stream.aclose()
    [sent] = scripted_llm.app.state.requests
    assert await scripted_llm.stream_end(sent["id"]) == "aborted"  # noticed asynchronously


async def test_reconfigure_changes_the_system_prompt(scripted_llm: ScriptedLLMServer) -> None:
    agent = make_agent(scripted_llm)
    agent.reconfigure(AgentConfig(system_prompt="Be a pirate."))
    await agent.chat(ChatRequest(message="hi"))
    assert scripted_llm.app.state.requests[-1]["messages"][0] == {"role": "system", "content": "Be a pirate."}


async def test_tool_allow_list_and_output_bound(scripted_llm: ScriptedLLMServer) -> None:
    agent = make_agent(scripted_llm, allowed_tools=["calculator"], max_tool_output_chars=100)
    assert [t.name for t in await agent.tool_specs()] == ["calculator"]
    resp = await agent.chat(ChatRequest(message='tool: sleep {"seconds": 0}'))
    assert resp.tool_calls[0].is_error and "not available" in (resp.tool_calls[0].result or "")
    agent.reconfigure(AgentConfig(allowed_tools=None, max_tool_output_chars=100))
    resp = await agent.chat(ChatRequest(message="calc: 9**150"))
    out = resp.tool_calls[0].result or ""
    assert len(out) < 140 and out.endswith("characters cut]")
    sent = scripted_llm.app.state.requests[-1]["messages"][-1]["content"]
    assert sent == out  # the LLM saw the bounded output


async def test_denied_tools_narrow_the_allow_list_for_one_turn(scripted_llm: ScriptedLLMServer) -> None:
    agent = make_agent(scripted_llm, allowed_tools=["calculator", "sleep"])
    resp = await agent.chat(ChatRequest(message="hello", denied_tools=["sleep", "current_time"]))
    offered = [t["function"]["name"] for t in scripted_llm.app.state.requests[-1]["tools"]]
    assert offered == ["calculator"] and resp.finish_reason == "stop"
    # Called anyway (the model was not offered it): refused, never run.
    resp = await agent.chat(ChatRequest(message='tool: sleep {"seconds": 5}', denied_tools=["sleep"]))
    assert resp.tool_calls[0].is_error and "not available" in (resp.tool_calls[0].result or "")
    # The next turn without the denial gets the agent's own allow-list back.
    await agent.chat(ChatRequest(message="hello"))
    assert [t["function"]["name"] for t in scripted_llm.app.state.requests[-1]["tools"]] == ["calculator", "sleep"]
