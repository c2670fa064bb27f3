"""How the engine shows tools to SmolLM2 and constrains its reply (see ``engine`` for why).

Messages are rendered by the GGUF's own ChatML template: contents become strings, assistant tool
calls are written out as ``functions.<name>:\n<arguments>``, tool results stay ``tool`` turns,
and the tools are listed in the system message. ``tool_grammar`` is the GBNF that makes the
reply either ``message:`` or one call with schema-valid arguments.
"""

from __future__ import annotations

import json
from typing import Any

DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
# The wording of llama_cpp's chatml-function-calling prompt: of the variants tried, the one this
# model fills in best (descriptions and shorter instructions gave "{{expression}}" more often).
TOOLS_PROMPT = (
    "\n\nYou have access to the following functions:\n{functions}"
    "\n\nYou can respond to users messages with either a single message or one or more function calls."
    "\n\nTo respond with a message begin the message with 'message:', use the following format:"
    "\n\nmessage:\n<message>"
    "\n\nTo respond with one or more function calls begin the message with 'functions.<function_name>:',"
    ' use the following format:\n\nfunctions.<function_name>:\n{{ "arg1": "value1", "arg2": "value2" }}'
    '\nfunctions.<function_name>:\n{{ "arg1": "value1", "arg2": "value2" }}'
)
# JSON strings may not hold raw control characters; llama_cpp's schema grammar allows them, and
# the model then writes its whole answer into one string.
_LOOSE_CHAR = 'char ::= [^"\\\\]'
_STRICT_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F]'


def _text(content: Any) -> str:
    if isinstance(content, list):  # OpenAI content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def prompt_messages(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> list[dict]:
    """Messages as the GGUF template renders them: string contents, tool calls written out, tools listed."""
    out = []
    for m in messages:
        parts = [_text(m.get("content"))] if m.get("content") else []
        for call in m.get("tool_calls") or []:
            parts.append(f"functions.{call['function']['name']}:\n{call['function'].get('arguments') or '{}'}")
        out.append({"role": "system" if m["role"] == "developer" else m["role"], "content": "\n".join(parts)})
    if tools:
        if not out or out[0]["role"] != "system":
            out.insert(0, {"role": "system", "content": DEFAULT_SYSTEM})
        out[0]["content"] += TOOLS_PROMPT.format(
            functions="".join(
                f"\nfunctions.{t['function']['name']}:\n{json.dumps(t['function'].get('parameters') or {})}\n"
                for t in tools
            )
        )
    return out


# Length and range bounds become counted repetitions in GBNF (``char{1,2000}``): a grammar
# that large crashed llama.cpp's sampler (SIGSEGV, taking the replica down). The schema the
# model is shown keeps them; the grammar checks structure and types only.
_GRAMMAR_DROPPED = frozenset(
    {"minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
     "pattern", "format", "default", "minItems", "maxItems", "multipleOf", "title", "description"}
)  # fmt: skip


def grammar_schema(schema: Any) -> Any:
    """``schema`` without the keywords that make the GBNF blow up (property names are kept)."""
    if isinstance(schema, list):
        return [grammar_schema(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            out[key] = {name: grammar_schema(sub) for name, sub in value.items()}
        elif key not in _GRAMMAR_DROPPED:
            out[key] = grammar_schema(value)
    return out


def tool_grammar(tools: list[dict[str, Any]], allow_message: bool) -> str:
    """GBNF for ``functions.<name>:\\n<arguments>`` over ``tools`` (or ``message:`` if allowed)."""
    from llama_cpp.llama_grammar import SchemaConverter

    conv = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    alternatives = ['"message:"'] if allow_message else []
    for i, tool in enumerate(tools):
        params = grammar_schema(tool["function"].get("parameters") or {"type": "object"})
        schema = conv.resolve_refs(params, f"tool{i}")
        rule = conv.visit(schema, f"tool{i}-args")
        alternatives.append(f'"functions.{tool["function"]["name"]}:\\n" {rule}')
    return conv.format_grammar().replace(_LOOSE_CHAR, _STRICT_CHAR) + f"\nroot ::= {' | '.join(alternatives)}\n"
