"""A scripted OpenAI-compatible chat server for tests, benchmarks and demos.

It speaks the real wire format (``/v1/chat/completions`` streaming or not,
``/v1/models``), so the agent reaches it through the same ``openai`` client
as any provider. What it answers is decided by rules on the last message:

- a tool result                → "The result is <content>."
- ``calc: <expr>`` or "what is <arithmetic>" → a ``calculator`` tool call
- ``time in <Zone/Name>``      → a ``current_time`` tool call
- ``loop``                     → a ``calculator`` call, every time (for max_steps)
- ``tool: <name> <json>; ...``  → those tool calls, all in one step
- ``slow: <n>``                → <n> tokens, ``slow_token_delay_s`` apart
- ``fail: <status>``           → that HTTP status with an OpenAI error body
- ``hang: <seconds>``           → wait that long before answering (timeouts)
- anything else                → "You said: <message>" (or ``reply_tokens`` tokens)

Run it alone with ``python -m serve_app.scripted_llm --port 8100``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

ARITH = re.compile(r"(?:calc:|what is|calculate|compute)\s*([-+*/().\d\s%^]+?)\s*\??$", re.I)
TIME_IN = re.compile(r"time in ([A-Za-z_]+(?:/[A-Za-z_]+)*)", re.I)


class ScriptedLLMConfig(BaseModel):
    latency_s: float = 0.0  # before the first byte of every call
    token_delay_s: float = 0.0  # between streamed tokens
    reply_tokens: int | None = None  # fixed-length plain replies (benchmarks)
    slow_token_delay_s: float = 0.2
    model: str = "scripted"


def _words(messages: list[dict[str, Any]]) -> int:
    return sum(len(str(m.get("content") or "").split()) for m in messages) + len(messages)


def decide(messages: list[dict[str, Any]], cfg: ScriptedLLMConfig) -> dict[str, Any]:
    """The scripted reply for a conversation: ``content`` or ``tool_calls``, or ``fail``."""
    last = messages[-1] if messages else {"role": "user", "content": ""}
    users = [m for m in messages if m.get("role") == "user"]
    if users and users[-1].get("content") == "loop":
        return {"tool_calls": [("calculator", {"expression": "1+1"})]}
    if last.get("role") == "tool":
        return {"content": f"The result is {last.get('content')}."}
    text = str(last.get("content") or "").strip()
    if m := re.match(r"hang:\s*([\d.]+)", text):
        return {"content": "late", "hang": float(m.group(1))}
    if m := re.match(r"fail:\s*(\d{3})", text):
        return {"fail": int(m.group(1))}
    if m := re.match(r"(midstream|garbled|sse-forms):", text):
        # After one token: an error event (midstream), a chunk that is not JSON (garbled);
        # or the reply in other legal SSE spellings: comments, event/id lines, "data:" without
        # its space, a data field split over two lines (sse-forms).
        return {"content": "partial reply", "stream_quirk": m.group(1)}
    if text.startswith("tool:"):
        calls = []
        for part in text[5:].split(";"):
            name, _, raw = part.strip().partition(" ")
            calls.append((name, json.loads(raw or "{}")))
        return {"tool_calls": calls}
    if m := re.match(r"slow:\s*(\d+)", text):
        return {"content": " ".join(f"t{i}" for i in range(int(m.group(1)))), "delay": cfg.slow_token_delay_s}
    if m := ARITH.search(text):
        return {"tool_calls": [("calculator", {"expression": m.group(1).strip()})]}
    if m := TIME_IN.search(text):
        return {"tool_calls": [("current_time", {"timezone": m.group(1)})]}
    if cfg.reply_tokens:
        return {"content": " ".join(f"w{i}" for i in range(cfg.reply_tokens))}
    return {"content": f"You said: {text}"}


def _tokens(content: str) -> list[str]:
    parts = content.split(" ")
    return [p if i == 0 else " " + p for i, p in enumerate(parts)]


def create_scripted_llm_app(cfg: ScriptedLLMConfig | None = None) -> FastAPI:
    cfg = cfg or ScriptedLLMConfig()
    app = FastAPI(title="scripted-llm")
    app.state.cfg = cfg
    app.state.requests = []  # every chat request received, in order
    app.state.finished = []  # ids of streams sent to the end
    app.state.aborted = []  # ids of streams whose client went away

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": cfg.model, "object": "model", "created": 0, "owned_by": "test"}],
        }

    @app.get("/_requests")
    async def requests_seen() -> dict[str, Any]:
        return {"requests": app.state.requests, "finished": app.state.finished, "aborted": app.state.aborted}

    @app.delete("/_requests")
    async def clear() -> dict[str, Any]:
        app.state.requests.clear()
        app.state.finished.clear()
        app.state.aborted.clear()
        return {}

    @app.post("/v1/chat/completions", response_model=None)
    async def completions(request: Request) -> Any:
        body = await request.json()
        cid = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        messages = body.get("messages", [])
        app.state.requests.append(
            {
                "id": cid,
                "messages": messages,
                "tools": body.get("tools"),
                "stream": body.get("stream", False),
                # The caller's TCP connection: the same port again means a kept-alive connection.
                "client_port": request.client.port if request.client else None,
            }
        )
        plan = decide(messages, cfg)
        if cfg.latency_s or plan.get("hang"):
            await asyncio.sleep(cfg.latency_s + plan.get("hang", 0.0))
        if "fail" in plan:
            status = plan["fail"]
            return JSONResponse(
                {"error": {"message": f"scripted failure {status}", "type": "server_error", "code": None}},
                status_code=status,
            )
        prompt_tokens = _words(messages)
        calls = [
            {
                "id": f"call_{uuid.uuid4().hex[:8]}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
            for name, args in plan.get("tool_calls", [])
        ]
        content = plan.get("content")
        toks = _tokens(content) if content else []
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": max(len(toks), len(calls) * 8),
            "total_tokens": prompt_tokens + max(len(toks), len(calls) * 8),
        }
        finish = "tool_calls" if calls else "stop"
        if not body.get("stream"):
            msg: dict[str, Any] = {"role": "assistant", "content": content}
            if calls:
                msg["tool_calls"] = calls
            return {
                "id": cid,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": cfg.model,
                "choices": [{"index": 0, "message": msg, "finish_reason": finish}],
                "usage": usage,
            }
        delay = plan.get("delay", cfg.token_delay_s)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], fin: str | None = None) -> str:
            obj = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": cfg.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": fin}],
            }
            return f"data: {json.dumps(obj)}\n\n"

        quirk = plan.get("stream_quirk")

        async def gen() -> AsyncIterator[str]:
            try:
                yield chunk({"role": "assistant", "content": ""})
                for n, tok in enumerate(toks):
                    if delay:
                        await asyncio.sleep(delay)
                    if quirk == "sse-forms":
                        data = chunk({"content": tok})[len("data: ") :].strip()
                        half = data.index(", ") + 1  # between two JSON members: the joining newline is whitespace
                        yield f": keep-alive\nevent: message\nid: {n}\ndata:{data[:half]}\ndata:{data[half:]}\n\n"
                    else:
                        yield chunk({"content": tok})
                    if quirk == "midstream":
                        error = {"message": "overloaded, key sk-leak", "type": "server_error"}
                        yield f"data: {json.dumps({'error': error})}\n\n"
                        return
                    if quirk == "garbled":
                        yield "data: {not json\n\n"
                        return
                for i, c in enumerate(calls):
                    yield chunk(
                        {
                            "tool_calls": [
                                {
                                    "index": i,
                                    "id": c["id"],
                                    "type": "function",
                                    "function": {"name": c["function"]["name"], "arguments": ""},
                                }
                            ]
                        }
                    )
                    yield chunk({"tool_calls": [{"index": i, "function": {"arguments": c["function"]["arguments"]}}]})
                yield chunk({}, finish)
                if include_usage:
                    obj = {
                        "id": cid,
                        "object": "chat.completion.chunk",
                        "created": int(time.time()),
                        "model": cfg.model,
                        "choices": [],
                        "usage": usage,
                    }
                    yield f"data: {json.dumps(obj)}\n\n"
                yield "data: [DONE]\n\n"
                app.state.finished.append(cid)
            except asyncio.CancelledError:
                app.state.aborted.append(cid)
                raise

        return StreamingResponse(gen(), media_type="text/event-stream")

    return app


# NOTE: idle connections are kept longer than a client's pool keeps them (httpx: 5 s), as
# hosted LLM APIs do. At uvicorn's default, also 5 s, the server closed an idle connection
# just as a pool could reuse it: after a pause, one call in a benchmark round failed with
# llm_unavailable (its clients do not retry).
KEEP_ALIVE_S = 75
# How every launcher of the scripted LLM runs uvicorn (tests, `python -m`, bench.llm).
SERVER_OPTIONS: dict[str, Any] = {"log_level": "warning", "access_log": False, "timeout_keep_alive": KEEP_ALIVE_S}


class ScriptedLLMServer:
    """Runs the scripted server with uvicorn in a background thread (tests)."""

    def __init__(self, cfg: ScriptedLLMConfig | None = None, port: int = 0) -> None:
        self.app = create_scripted_llm_app(cfg)
        self._config = uvicorn.Config(self.app, host="127.0.0.1", port=port, lifespan="off", **SERVER_OPTIONS)
        self._server = uvicorn.Server(self._config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.servers[0].sockets[0].getsockname()[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def stream_end(self, request_id: str, timeout_s: float = 5.0) -> str | None:
        """How that request's stream ended, ``"finished"`` or ``"aborted"``, once it has; None after ``timeout_s``.

        NOTE: by id, not "the only one": a stream an earlier test left behind may end
        at any time (a ``hang:`` whose client timed out is answered once the hang is over).
        """
        state = self.app.state
        deadline = time.monotonic() + timeout_s
        while True:
            if request_id in state.aborted:
                return "aborted"
            if request_id in state.finished:
                return "finished"
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.02)

    def start(self) -> ScriptedLLMServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("scripted LLM server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> ScriptedLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--latency-s", type=float, default=0.0)
    parser.add_argument("--token-delay-s", type=float, default=0.0)
    parser.add_argument("--reply-tokens", type=int, default=None)
    a = parser.parse_args()
    cfg = ScriptedLLMConfig(latency_s=a.latency_s, token_delay_s=a.token_delay_s, reply_tokens=a.reply_tokens)
    uvicorn.run(create_scripted_llm_app(cfg), host=a.host, port=a.port, **SERVER_OPTIONS)


if __name__ == "__main__":
    main()
