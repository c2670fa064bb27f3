"""Tools for tests that load tools by import path."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict, Field

from tools.base import Tool


class EchoArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="The text to repeat.")


class EchoTool(Tool):
    name = "echo"
    description = "Repeat the text back unchanged."
    Args = EchoArgs

    async def run(self, args: EchoArgs) -> str:
        return args.text


class SleepArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(ge=0, le=30, description="How long to sleep, in seconds.")


class SleepTool(Tool):
    name = "sleep"
    description = "Sleep for a while, then say how long."
    Args = SleepArgs

    async def run(self, args: SleepArgs) -> dict[str, float]:
        await asyncio.sleep(args.seconds)
        return {"slept": args.seconds}


echo_instance = EchoTool()
"""A ready-made instance, for loading an instance rather than a class."""


class NeedsConfigTool(EchoTool):
    """A tool whose constructor needs an argument, so it cannot be loaded by path."""

    name = "needs_config"

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
