"""The tool registry: the in-process ``ToolExecutor``.

It publishes each tool's arguments as a plain JSON schema, validates the
arguments an LLM sends, runs the tool and turns every outcome, failures
included, into a ``ToolResult``.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from agent.dto import MAX_TOOL_ARGUMENT_BYTES, FieldError, ToolErrorKind, ToolInvocation, ToolResult, ToolSpec
from agent.errors import ToolNotFoundError
from tools.base import Tool, ToolFailure, ToolOutput
from tools.calculator import CalculatorTool
from tools.current_time import CurrentTimeTool

logger = logging.getLogger(__name__)

BUILTIN_TOOLS: list[type[Tool]] = [CalculatorTool, CurrentTimeTool]

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # what OpenAI accepts as a function name
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_ROOT = "arguments"  # the field named when the arguments as a whole are wrong


class _Rejected(Exception):
    def __init__(self, kind: ToolErrorKind, message: str, field_errors: Sequence[FieldError] = ()) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.field_errors = list(field_errors)


class ToolRegistry:
    """Tools by name; implements the ``ToolExecutor`` port in process.

    Args:
        tools: Tools to register at once.
        max_argument_bytes: Larger arguments (as UTF-8 JSON) are refused before
            parsing, as invalid arguments naming ``arguments``.
    """

    def __init__(self, tools: Iterable[Tool] = (), *, max_argument_bytes: int = MAX_TOOL_ARGUMENT_BYTES) -> None:
        self.max_argument_bytes = max_argument_bytes
        self._tools: dict[str, Tool] = {}
        self._specs: dict[str, ToolSpec] = {}
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool) -> None:
        """Add a tool.

        Raises:
            ValueError: the tool is malformed or its name is already taken.
        """
        name = getattr(tool, "name", None)
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"{type(tool).__name__}.name must match {_NAME.pattern}, got {name!r}")
        if not isinstance(getattr(tool, "description", None), str) or not tool.description.strip():
            raise ValueError(f"tool {name!r} needs a non-empty description")
        args = getattr(tool, "Args", None)
        if not (inspect.isclass(args) and issubclass(args, BaseModel)):
            raise ValueError(f"tool {name!r}: Args must be a pydantic BaseModel subclass")
        if name in self._tools:
            other = type(self._tools[name]).__qualname__
            raise ValueError(f"duplicate tool name {name!r}: already registered by {other}")
        spec = ToolSpec(name=name, description=tool.description, parameters=args_schema(args))
        self._tools[name] = tool
        self._specs[name] = spec

    def get(self, name: str) -> Tool:
        """The tool called ``name``.

        Raises:
            ToolNotFoundError: there is none.
        """
        try:
            return self._tools[name]
        except KeyError:
            raise ToolNotFoundError(self._unknown(name)) from None

    def specs(self) -> list[ToolSpec]:
        return list(self._specs.values())

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    async def list_tools(self) -> list[ToolSpec]:
        return self.specs()

    async def execute(self, invocation: ToolInvocation) -> ToolResult:
        """Run one tool call. Every failure comes back as ``is_error=True``; nothing raises.

        NOTE: cancellation (``asyncio.CancelledError``) still propagates, as it must.
        """
        started = time.perf_counter()
        kind: ToolErrorKind | None = None
        field_errors: list[FieldError] = []
        try:
            tool = self._tools.get(invocation.name)
            if tool is None:
                raise _Rejected(ToolErrorKind.NOT_FOUND, self._unknown(invocation.name))
            spec = self._specs[invocation.name]
            _check_size(spec, invocation.arguments, self.max_argument_bytes)
            args = _parse_arguments(tool, spec, invocation.arguments)
            content = _encode(await tool.run(args))
        except _Rejected as exc:
            kind, content, field_errors = exc.kind, exc.message, exc.field_errors
        except ToolFailure as exc:
            kind, content = ToolErrorKind.FAILED, exc.message
        except Exception:
            logger.exception("tool %r raised (call_id=%s)", invocation.name, invocation.call_id)
            kind = ToolErrorKind.INTERNAL
            content = f"Tool {invocation.name!r} failed with an internal error."
        return ToolResult(
            call_id=invocation.call_id,
            name=invocation.name,
            content=content,
            is_error=kind is not None,
            error_kind=kind,
            field_errors=field_errors,
            duration_ms=(time.perf_counter() - started) * 1000,
        )

    def _unknown(self, name: str) -> str:
        available = ", ".join(sorted(self._tools)) or "none"
        return f"Unknown tool {name!r}. Available tools: {available}."


def args_schema(args: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of ``args`` with every ``$ref`` inlined, as OpenAI function parameters.

    Raises:
        ValueError: the model is recursive, which a schema without ``$ref`` cannot express.
    """
    schema = args.model_json_schema()
    defs = schema.pop("$defs", {})
    schema.pop("title", None)
    inlined: dict[str, Any] = _inline(schema, defs, ())
    inlined.setdefault("properties", {})
    return inlined


def _inline(node: Any, defs: dict[str, Any], seen: tuple[str, ...]) -> Any:
    if isinstance(node, list):
        return [_inline(item, defs, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        key = ref.removeprefix("#/$defs/")
        if key in seen:
            raise ValueError(f"recursive argument model {key!r} is not supported")
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        return {**_inline(defs[key], defs, (*seen, key)), **_inline(siblings, defs, seen)}
    return {key: _inline(value, defs, seen) for key, value in node.items()}


def _check_size(spec: ToolSpec, raw: str | dict[str, Any], limit: int) -> None:
    if isinstance(raw, str):
        size = len(raw.encode("utf-8", errors="replace"))
    else:
        # NOTE: default=str: a Python caller may pass values JSON cannot hold; their size still counts.
        size = len(json.dumps(raw, ensure_ascii=False, default=str).encode("utf-8", errors="replace"))
    if size > limit:
        msg = f"at most {limit} bytes of JSON, got {size}"
        raise _invalid(spec, [FieldError(field=_ROOT, message=msg)])


def _parse_arguments(tool: Tool, spec: ToolSpec, raw: str | dict[str, Any]) -> BaseModel:
    if isinstance(raw, str):
        # NOTE: some models send "" for a call without arguments.
        try:
            raw = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as exc:
            msg = f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
            raise _invalid(spec, [FieldError(field=_ROOT, message=msg)]) from None
    if not isinstance(raw, dict):
        msg = f"must be a JSON object, got {type(raw).__name__}"
        raise _invalid(spec, [FieldError(field=_ROOT, message=msg)])
    try:
        return tool.Args.model_validate(raw)
    except ValidationError as exc:
        errors = [
            FieldError(field=".".join(str(part) for part in err["loc"]) or _ROOT, message=err["msg"])
            for err in exc.errors(include_url=False)
        ]
        raise _invalid(spec, errors) from None


def _invalid(spec: ToolSpec, errors: list[FieldError]) -> _Rejected:
    problems = "; ".join(f"{e.field}: {e.message}" for e in errors)
    required = set(spec.parameters.get("required", []))
    expected = ", ".join(
        f"{name} ({prop.get('type', 'any')}{', required' if name in required else ''})"
        for name, prop in spec.parameters["properties"].items()
    )
    message = (
        f"Invalid arguments for tool {spec.name!r}: {problems}. "
        f"Expected a JSON object with: {expected or 'no arguments'}."
    )
    return _Rejected(ToolErrorKind.INVALID_ARGUMENTS, message, errors)


def _encode(output: ToolOutput) -> str:
    if isinstance(output, str):
        return output
    # NOTE: allow_nan=False: NaN is not JSON; a tool returning it is a bug, reported as internal.
    return json.dumps(output, ensure_ascii=False, allow_nan=False)


def load_tool(import_path: str) -> Tool:
    """Load a tool from ``"package.module:ClassName"`` (or ``"package.module.ClassName"``).

    The attribute may be a ``Tool`` subclass, instantiated without arguments, or a
    ``Tool`` instance.

    Raises:
        ValueError: the path is malformed, the module or attribute is missing, or
            the attribute is not a tool.
    """
    module_name, sep, attr_path = import_path.strip().partition(":")
    if not sep:
        module_name, _, attr_path = module_name.rpartition(".")
    if not (_DOTTED.fullmatch(module_name) and _DOTTED.fullmatch(attr_path)):
        raise ValueError(f"malformed tool import path {import_path!r}; expected 'package.module:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ValueError(f"cannot import module {module_name!r} for tool {import_path!r}: {exc}") from exc
    obj: Any = module
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"tool {import_path!r}: module {module_name!r} has no attribute {attr_path!r}")
        obj = getattr(obj, part)
    if isinstance(obj, Tool):
        return obj
    if not (inspect.isclass(obj) and issubclass(obj, Tool)):
        raise ValueError(f"tool {import_path!r} is {obj!r}, not a Tool subclass or instance")
    if inspect.isabstract(obj):
        raise ValueError(f"tool {import_path!r} is abstract: it must implement run()")
    try:
        return obj()
    except TypeError as exc:
        raise ValueError(f"tool {import_path!r} cannot be created without arguments: {exc}") from exc


def build_registry(extra_import_paths: Sequence[str] = (), include_builtins: bool = True) -> ToolRegistry:
    """A registry of the built-in tools plus those at ``extra_import_paths``.

    Raises:
        ValueError: a path cannot be loaded, or two tools share a name.
    """
    registry = ToolRegistry(cls() for cls in BUILTIN_TOOLS if include_builtins)
    for path in extra_import_paths:
        registry.register(load_tool(path))
    return registry
