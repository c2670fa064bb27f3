"""What the two fuzz runs share: the checks, hypothesis settings, and the case hooks.

``tests/http/test_fuzz_openapi.py`` fuzzes the app in-process; ``tests/serve/test_fuzz_serve.py``
fuzzes the deployed Serve app over HTTP. Both steer half their cases at what exists
(``steer``, from ``SEEDED``) and defuse scripted-LLM commands (``defuse``).
"""

from __future__ import annotations

import re
from typing import Any

import hypothesis
import schemathesis
from hypothesis import HealthCheck
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

# What the scripted LLM treats as a command (serve_app.scripted_llm.decide): anything else is echoed.
_SCRIPTED_COMMAND = re.compile(r"\s*(hang:|slow:|fail:|tool:|loop\s*$)")


def defused(text: Any) -> Any:
    return "x " + text if isinstance(text, str) and _SCRIPTED_COMMAND.match(text) else text


def defuse(case: schemathesis.Case) -> None:
    """Turn a generated message that is a scripted-LLM command into plain text (it is echoed then)."""
    body = case.body
    if not isinstance(body, dict):
        return
    if "message" in body:  # /api/chat, /api/chat/stream
        body["message"] = defused(body["message"])
    messages = body.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):  # /v1/chat/completions
        last = messages[-1]
        content = last.get("content")
        if isinstance(content, list):  # text parts: the LLM gets them joined
            joined = "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
            if _SCRIPTED_COMMAND.match(joined) and isinstance(content[0], dict):
                content[0]["text"] = "x " + str(content[0].get("text", ""))
        else:
            last["content"] = defused(content)


TOOL_CALLS = [("calculator", {"expression": "(2+3)*4"}), ("current_time", {"timezone": "Europe/Paris"})]
# What exists in the fuzzed app (``seed``): the steered cases name these.
SEEDED: dict[str, str] = {}


def seed_through(client: Any) -> None:
    """Two stored sessions and a memory, made through the app's own routes (``client``:
    any client with httpx's ``post``), so the fuzzed routes that look things up find some."""
    for session_id in (SEEDED["session"], SEEDED["spare_session"]):
        r = client.post("/api/chat", json={"message": "hello", "session_id": session_id})
        assert r.status_code == 200, r.text
    r = client.post("/api/memory", json={"text": "my dog is called Biscuit"})
    assert r.status_code == 201, r.text
    SEEDED["memory_id"] = r.json()["id"]


def _with(params: dict[str, Any] | None, **values: str | None) -> dict[str, Any]:
    return {**(params or {}), **values}


def steer(case: schemathesis.Case, text: str) -> schemathesis.Case:
    """Point a generated case at what exists, so the success answers get checked too.

    Random values almost never name the served model, a stored session, a memory, a
    tool or an admin key, so without this ``/v1/chat/completions`` would only ever
    answer 400, the lookups 404, the key routes 403: their success bodies would never
    meet their schemas. A DELETE gets a spare, so the reads after it still find theirs.
    """
    label, body = case.operation.label, case.body
    if label == "POST /v1/chat/completions" and isinstance(body, dict):
        body["model"] = "agentserve"
        if not isinstance(body.get("messages"), list):
            body["messages"] = []
        body["messages"].append({"role": "user", "content": text})
    elif label.startswith(("GET /api/sessions/", "DELETE /api/sessions/")):
        session = SEEDED.get("spare_session" if label.startswith("DELETE") else "session")
        case.path_parameters = _with(case.path_parameters, session_id=session)
    elif label == "DELETE /api/memory/{memory_id}":
        case.path_parameters = _with(case.path_parameters, memory_id=SEEDED.get("memory_id"))
        case.query = {}  # the memory is the anonymous caller's
    elif label == "POST /api/tools/{name}":
        name, arguments = TOOL_CALLS[len(text) % len(TOOL_CALLS)]
        case.path_parameters = _with(case.path_parameters, name=name)
        case.body = dict(arguments)
    elif label.startswith(("GET /api/keys", "POST /api/keys", "DELETE /api/keys/")):
        headers = {k: v for k, v in (case.headers or {}).items() if k.lower() not in ("authorization", "x-api-key")}
        case.headers = {**headers, "X-API-Key": SEEDED.get("admin_key", "")}
        if label.startswith("DELETE"):
            case.path_parameters = _with(case.path_parameters, key_id=SEEDED.get("spare_key_id"))
    return case


FUZZ_SETTINGS = hypothesis.settings(
    deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)


def steer_half_the_cases(schema: Any) -> None:
    """Register on ``schema``: half the generated cases as generated, half steered at what exists (``steer``)."""

    @schema.hook
    def flatmap_case(
        context: schemathesis.HookContext, case: schemathesis.Case
    ) -> st.SearchStrategy[schemathesis.Case]:
        return st.one_of(st.just(case), st.text(min_size=1, max_size=40).map(lambda text: steer(case, text)))
