"""The context window: newest kept, oldest dropped, tool pairs never split."""

from __future__ import annotations

from agent.context import ApproxTokenCounter, fit_to_budget
from agent.dto import Message, Role, ToolCall

C = ApproxTokenCounter()


def user(text: str) -> Message:
    return Message(role=Role.USER, content=text)


def assistant(text: str | None, calls: list[ToolCall] | None = None) -> Message:
    return Message(role=Role.ASSISTANT, content=text, tool_calls=calls or [])


def tool(call_id: str, text: str) -> Message:
    return Message(role=Role.TOOL, content=text, tool_call_id=call_id, name="calculator")


SYSTEM = Message(role=Role.SYSTEM, content="be brief")


def turn_with_tool(i: int) -> list[Message]:
    call = ToolCall(id=f"c{i}", name="calculator", arguments='{"expression": "1+1"}')
    return [user(f"q{i} " + "x" * 40), assistant(None, [call]), tool(f"c{i}", "2"), assistant(f"a{i}")]


def test_everything_fits() -> None:
    history = turn_with_tool(1) + turn_with_tool(2)
    out = fit_to_budget(SYSTEM, history, [user("now")], 10_000, C)
    assert out == [SYSTEM, *history, out[-1]] and out[-1].content == "now"


def test_oldest_dropped_first_and_newest_always_kept() -> None:
    history = turn_with_tool(1) + turn_with_tool(2) + turn_with_tool(3)
    newest = [user("y" * 400)]
    full = fit_to_budget(SYSTEM, history, newest, 10_000, C)
    budget = sum(C.count(m) for m in full) - 10  # one message too many
    out = fit_to_budget(SYSTEM, history, newest, budget, C)
    assert out[0] is SYSTEM and out[-1] is newest[0]
    kept = out[1:-1]
    assert kept and kept[0].role is Role.USER
    assert kept == history[len(history) - len(kept) :]  # a suffix of history: the oldest went first
    assert sum(C.count(m) for m in out) <= budget


def test_tool_pairs_are_never_split() -> None:
    history = turn_with_tool(1) + turn_with_tool(2)
    for budget in range(0, 400, 3):
        out = fit_to_budget(SYSTEM, history, [user("now")], budget, C)
        ids_called = {c.id for m in out for c in m.tool_calls}
        ids_answered = {m.tool_call_id for m in out if m.role is Role.TOOL}
        assert ids_called == ids_answered, budget


def test_newest_kept_even_over_budget() -> None:
    newest = [user("z" * 4000)]
    out = fit_to_budget(SYSTEM, turn_with_tool(1), newest, 10, C)
    assert out == [SYSTEM, newest[0]]


def test_orphan_tool_results_are_dropped() -> None:
    history = [tool("gone", "2"), assistant("a"), user("q"), assistant("b")]
    out = fit_to_budget(SYSTEM, history, [user("now")], 10_000, C)
    assert [m.content for m in out] == ["be brief", "q", "b", "now"]
