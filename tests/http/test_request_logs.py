"""Request logs: one line per request with its fields; never a credential; message contents only when asked.

The records are captured from the logging module as Serve's JSON formatter would
read them: the line's fields are attributes of the record.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from fastapi import FastAPI

from memory.in_memory import InMemoryConversationStore
from serve_app.auth.api_keys import create_api_key
from serve_app.observability.logs import REQUEST_LOGGER
from serve_app.scripted_llm import ScriptedLLMServer
from serve_app.settings import Settings
from tests.http.app_support import bearer, build_full_app, client_of, token
from tests.unit.auth.support import SECRET

SECRET_WORDS = "my parrot is called Captain Flint"
FIELDS = {"request_id", "method", "route", "status", "latency_ms", "principal_id", "session_id", "client_ip"}


class Captured(logging.Handler):
    """Every record of every logger, from DEBUG up."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not any(r is record for r in self.records):  # attached twice: seen by both loggers while it propagates
            self.records.append(record)

    def lines(self) -> list[logging.LogRecord]:
        return [r for r in self.records if r.name == REQUEST_LOGGER]

    def text(self, level: int = logging.DEBUG) -> str:
        """Everything a formatter could write of the records at ``level`` and up: message and attributes."""
        return "\n".join(f"{r.getMessage()} {r.__dict__}" for r in self.records if r.levelno >= level)


@pytest.fixture
def logs() -> Iterator[Captured]:
    """Attached to the root and to the request logger: Ray, once imported, stops ``ray.serve`` propagating."""
    handler = Captured()
    root, request_log = logging.getLogger(), logging.getLogger(REQUEST_LOGGER)
    saved = root.level, request_log.level
    root.setLevel(logging.DEBUG)
    request_log.setLevel(logging.DEBUG)
    root.addHandler(handler)
    request_log.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        request_log.removeHandler(handler)
        root.setLevel(saved[0])
        request_log.setLevel(saved[1])


def app_for(scripted_llm: ScriptedLLMServer, store: InMemoryConversationStore, contents: bool = False) -> FastAPI:
    return build_full_app(scripted_llm.base_url, store=store, log_message_contents=contents)


async def test_one_line_per_request_with_its_fields(scripted_llm: ScriptedLLMServer, logs: Captured) -> None:
    app = app_for(scripted_llm, InMemoryConversationStore())
    async with client_of(app, "10.1.2.3") as c:
        chat = await c.post(
            "/api/chat", headers={**bearer(token("alice")), "X-Request-ID": "req-42"}, json={"message": "hi"}
        )
        session = chat.json()["session_id"]
        listed = await c.get(f"/api/sessions/{session}/messages", headers=bearer(token("alice")))
        missing = await c.get("/api/sessions/ses_nope", headers=bearer(token("alice")))
        await c.get("/live")
    assert chat.status_code == 200 and listed.status_code == 200 and missing.status_code == 404
    lines = logs.lines()
    assert [(r.levelname, r.route, r.status) for r in lines] == [  # type: ignore[attr-defined]
        ("INFO", "/api/chat", 200),
        ("INFO", "/api/sessions/{session_id}/messages", 200),
        ("INFO", "/api/sessions/{session_id}", 404),
        ("DEBUG", "/live", 200),  # probes: DEBUG, not a line every few seconds
    ]
    first = lines[0].__dict__
    assert first.keys() >= FIELDS
    assert first["request_id"] == "req-42" and first["method"] == "POST"
    assert first["principal_id"] == "alice" and first["session_id"] == session
    assert first["client_ip"] == "10.1.2.3" and first["latency_ms"] > 0
    assert lines[1].__dict__["session_id"] == session  # from the path
    assert lines[2].__dict__["request_id"] == missing.headers["x-request-id"]


async def test_refusals_before_the_route_are_logged_too(scripted_llm: ScriptedLLMServer, logs: Captured) -> None:
    app = app_for(scripted_llm, InMemoryConversationStore())
    async with client_of(app) as c:
        await c.get("/api/sessions")
        await c.post("/api/chat", content=b"hi", headers={"content-type": "text/plain", **bearer(token())})
    assert [(r.route, r.status, r.principal_id) for r in logs.lines()] == [  # type: ignore[attr-defined]
        ("/api/sessions", 401, None),
        ("/api/chat", 415, None),
    ]


async def test_a_stream_and_the_openai_api_name_their_session(scripted_llm: ScriptedLLMServer, logs: Captured) -> None:
    app = app_for(scripted_llm, InMemoryConversationStore())
    headers = bearer(token("bob"))
    async with client_of(app) as c:
        stream = await c.post("/api/chat/stream", headers=headers, json={"message": "hi"})
        body = {"model": "agentserve", "messages": [{"role": "user", "content": "hi"}]}
        completion = await c.post("/v1/chat/completions", headers=headers, json=body)
    assert stream.status_code == 200 and completion.status_code == 200
    stream_line, v1_line = logs.lines()
    assert stream_line.__dict__["session_id"] and stream_line.__dict__["session_id"] in stream.text
    assert v1_line.__dict__["session_id"] == completion.headers["x-session-id"]


async def test_credentials_never_reach_a_log_record(scripted_llm: ScriptedLLMServer, logs: Captured) -> None:
    store = InMemoryConversationStore()
    key = (await create_api_key(store, "alice", "laptop", ["chat", "admin"])).key
    jwt_token = token("alice", "chat admin")
    app = app_for(scripted_llm, store)
    async with client_of(app) as c:
        assert (await c.post("/api/chat", headers=bearer(jwt_token), json={"message": "hi"})).status_code == 200
        assert (await c.get("/api/sessions", headers={"X-API-Key": key})).status_code == 200
        assert (await c.get("/api/sessions", headers=bearer(key))).status_code == 200
        both = await c.get("/api/sessions", headers={"X-API-Key": key, **bearer(jwt_token)})
        made = await c.post(
            "/api/keys", headers=bearer(jwt_token), json={"owner": "x", "name": "n", "scopes": ["chat"]}
        )
        assert (await c.get("/api/sessions", headers=bearer(jwt_token[:-4] + "AAAA"))).status_code == 401
        assert (await c.get("/api/sessions", headers={"X-API-Key": key[:-4] + "AAAA"})).status_code == 401
    assert both.status_code == 401 and made.status_code == 201
    new_key = made.json()["key"]
    assert len(logs.lines()) == 7
    everything = logs.text()
    for secret in (key, jwt_token, new_key, SECRET, key.split("_", 2)[2], jwt_token.split(".")[-1]):
        assert secret not in everything


async def test_message_contents_are_not_logged_by_default(scripted_llm: ScriptedLLMServer, logs: Captured) -> None:
    app = app_for(scripted_llm, InMemoryConversationStore())
    async with client_of(app) as c:
        r = await c.post("/api/chat", headers=bearer(token()), json={"message": SECRET_WORDS})
    assert r.status_code == 200 and SECRET_WORDS in r.json()["response"]
    assert SECRET_WORDS not in logs.text(logging.INFO)
    assert "user_message" not in logs.lines()[0].__dict__


async def test_message_contents_are_logged_when_enabled(scripted_llm: ScriptedLLMServer, logs: Captured) -> None:
    app = app_for(scripted_llm, InMemoryConversationStore(), contents=True)
    async with client_of(app) as c:
        r = await c.post("/api/chat", headers=bearer(token()), json={"message": SECRET_WORDS})
        s = await c.post("/api/chat/stream", headers=bearer(token()), json={"message": "streamed words"})
    assert r.status_code == 200 and s.status_code == 200
    assert "LOG_MESSAGE_CONTENTS is on" in logs.text(logging.WARNING)  # said loudly at start-up
    chat_line, stream_line = (r.__dict__ for r in logs.lines())
    assert chat_line["user_message"] == SECRET_WORDS and chat_line["reply"] == r.json()["response"]
    assert stream_line["user_message"] == "streamed words" and stream_line["reply"] == "You said: streamed words"


def test_production_refuses_logging_message_contents() -> None:
    shared = {
        "llm_base_url": "http://llm",
        "database_url": "postgresql://db/agentserve",
        "redis_url": "redis://redis",
        "lancedb_uri": "s3://bucket/lancedb",
    }
    with pytest.raises(ValueError, match="LOG_MESSAGE_CONTENTS"):
        Settings(_env_file=None, agentserve_env="production", log_message_contents=True, **shared)  # type: ignore[call-arg]
    assert not Settings(_env_file=None, agentserve_env="production", **shared).log_message_contents  # type: ignore[call-arg]
    assert Settings(_env_file=None, log_message_contents=True).log_message_contents  # type: ignore[call-arg]
