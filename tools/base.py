"""The base every tool derives from: a name, a description, pydantic ``Args`` and ``run``.

A tool knows nothing of Ray or HTTP; the registry validates its arguments,
runs it and turns whatever happens into a ``ToolResult``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, TypeAlias

from pydantic import BaseModel

ToolOutput: TypeAlias = str | dict[str, Any] | list[Any] | int | float


class ToolFailure(Exception):
    """An expected failure whose message is safe to show the LLM and the caller.

    Raise it from ``Tool.run`` for errors the caller can act on ("division by
    zero"); any other exception is reported as an internal error without its text.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Tool(ABC):
    """A function the LLM may call.

    Subclasses set the class attributes and implement ``run``::

        class EchoTool(Tool):
            name = "echo"
            description = "Repeat the text back."

            class Args(BaseModel):
                model_config = ConfigDict(extra="forbid")
                text: str

            async def run(self, args: Args) -> str:
                return args.text

    Attributes:
        name: The function name the LLM calls (``^[A-Za-z0-9_-]{1,64}$``).
        description: What the tool does and when to use it; the LLM reads it.
        Args: The pydantic model of the arguments; its JSON schema is what the LLM sees.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    Args: ClassVar[type[BaseModel]]

    @abstractmethod
    async def run(self, args: Any) -> ToolOutput:
        """Run the tool with validated arguments (an instance of ``Args``).

        Returns:
            Text, returned as is, or a JSON-encodable value the registry encodes.

        Raises:
            ToolFailure: an expected error; its message reaches the caller.
        """
