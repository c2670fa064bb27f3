"""Fit the conversation into the model's context window.

The system prompt and the newest turn are always kept; older messages are
dropped oldest first, and an assistant message that called tools is kept or
dropped together with its tool results, so no pair is ever split.
"""

from __future__ import annotations

from typing import Protocol

from agent.dto import Message, Role

PER_MESSAGE_OVERHEAD = 4


class TokenCounter(Protocol):
    def count(self, message: Message) -> int: ...


class ApproxTokenCounter:
    """About four characters a token: close enough for budgeting, with no tokenizer to load."""

    def __init__(self, chars_per_token: float = 4.0) -> None:
        self.chars_per_token = chars_per_token

    def count(self, message: Message) -> int:
        chars = len(message.content or "")
        chars += sum(len(c.name) + len(c.arguments) for c in message.tool_calls)
        return PER_MESSAGE_OVERHEAD + int(chars / self.chars_per_token + 0.999)


def _units(history: list[Message]) -> list[list[Message]]:
    """Group messages so that a tool-calling assistant message travels with its results."""
    units: list[list[Message]] = []
    for m in history:
        if m.role is Role.TOOL and units and (units[-1][0].tool_calls):
            units[-1].append(m)
        elif m.role is Role.TOOL:
            continue  # an orphan result (its call was cut off by the store's limit): drop it
        else:
            units.append([m])
    return units


def fit_to_budget(
    system: Message, history: list[Message], newest: list[Message], budget: int, counter: TokenCounter
) -> list[Message]:
    """The messages to send: system + as much recent history as fits + the newest turn."""
    used = counter.count(system) + sum(counter.count(m) for m in newest)
    kept: list[list[Message]] = []
    for unit in reversed(_units(history)):
        cost = sum(counter.count(m) for m in unit)
        if used + cost > budget:
            break
        kept.append(unit)
        used += cost
    flat = [m for unit in reversed(kept) for m in unit]
    # Start at a user message, as providers expect after the system prompt.
    while flat and flat[0].role is not Role.USER:
        flat.pop(0)
    return [system, *flat, *newest]
