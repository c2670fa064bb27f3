"""Tools that observe how the agent runs them (loaded by import path in tests)."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from pydantic import BaseModel, Field

from tools import Tool

_arrived: dict[int, int] = defaultdict(int)
_events: dict[int, asyncio.Event] = {}


class RendezvousArgs(BaseModel):
    parties: int = Field(ge=1, le=16)
    key: str = ""


class RendezvousTool(Tool):
    """Returns only once ``parties`` calls are running at the same time."""

    name = "rendezvous"
    description = "Wait until the given number of calls are running concurrently."
    Args = RendezvousArgs

    async def run(self, args: RendezvousArgs) -> str:  # type: ignore[override]
        group = args.parties
        event = _events.setdefault(group, asyncio.Event())
        _arrived[group] += 1
        if _arrived[group] >= group:
            event.set()
        await asyncio.wait_for(event.wait(), timeout=2)
        return f"met {group}"
