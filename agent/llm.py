"""The LLM client: any OpenAI-compatible endpoint through the ``openai`` SDK.

Retries with exponential backoff and jitter on 408/409/429/5xx and connection
errors are the SDK's own (``max_retries``), honouring ``Retry-After``. A stream
is retried only until its first byte: once tokens flowed, a failure ends the turn.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import httpx
import httpx2
import openai

from agent.config import LLMEndpoint as LLMEndpoint  # where it was defined first
from agent.dto import Message, ToolCall, ToolSpec, Usage
from agent.errors import (
    LLMError,
    LLMRateLimitedError,
    LLMTimeoutError,
    LLMUnavailableError,
)
from agent.ports import LLMParams, LLMResult, LLMTextDelta

_TRANSPORT_MODULES = {"httpx", "httpx2", "httpcore", "httpcore2", "anyio", "h11"}


def map_openai_error(exc: Exception) -> LLMError:
    """Turn an SDK exception into the core's error; messages never carry secrets."""
    if isinstance(exc, openai.APITimeoutError):
        return LLMTimeoutError("the LLM did not answer in time")
    if isinstance(exc, openai.APIConnectionError):
        return LLMUnavailableError("the LLM endpoint cannot be reached")
    if isinstance(exc, openai.RateLimitError):
        retry = exc.response.headers.get("retry-after")
        try:
            retry_after = float(retry) if retry else None
        except ValueError:
            retry_after = None
        return LLMRateLimitedError("the LLM provider is rate limiting us", retry_after=retry_after)
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return LLMError("the LLM provider rejected our credentials")
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500:
            return LLMUnavailableError(f"the LLM provider failed (HTTP {exc.status_code})")
        return LLMError(f"the LLM provider refused the request (HTTP {exc.status_code})")
    return LLMError("the LLM call failed")


POOLS = 8
"""SDK clients (each with its own connection pool) that one ``OpenAILLMClient`` spreads calls over.

NOTE: httpcore walks every connection of its pool each time a request starts or a
response closes; with ~1,000 streams open in one Agent replica that walk was ~11% of
its CPU at the peak (docs/benchmarks.md, "Seventh session"). A call goes to the pool
with the fewest calls in flight, the first on a tie: one pool, so one kept-alive
connection, at low concurrency; an eighth of the connections per pool under load.
"""


class OpenAILLMClient:
    """``LLMClient`` for an OpenAI-compatible chat completions endpoint."""

    def __init__(self, endpoint: LLMEndpoint, pools: int = POOLS) -> None:
        self.endpoint = endpoint
        # NOTE: one TLS context for every pool: the SDK makes one per client otherwise,
        # loading the CA store each time (~50 ms of a replica's start per client).
        tls = httpx2.create_ssl_context()
        self._clients = [
            openai.AsyncOpenAI(
                base_url=endpoint.base_url,
                api_key=endpoint.api_key.get_secret_value(),
                timeout=openai.Timeout(endpoint.timeout_s, connect=endpoint.connect_timeout_s),
                max_retries=endpoint.max_retries,
                http_client=openai.DefaultAsyncHttpxClient(verify=tls),
            )
            for _ in range(max(1, pools))
        ]
        self._in_flight = [0] * len(self._clients)

    @property
    def model(self) -> str:
        return self.endpoint.model

    @property
    def pool_loads(self) -> list[int]:
        """Calls in flight on each pool."""
        return list(self._in_flight)

    def _least_loaded(self) -> int:
        loads = self._in_flight
        return loads.index(min(loads))

    async def close(self) -> None:
        for c in self._clients:
            await c.close()

    async def ping(self) -> None:
        try:
            await self._clients[0].models.list()
        except openai.OpenAIError as exc:
            raise map_openai_error(exc) from None

    async def stream_chat(
        self, messages: list[Message], tools: list[ToolSpec], params: LLMParams
    ) -> AsyncIterator[LLMTextDelta | LLMResult]:
        kwargs: dict[str, Any] = {
            "model": self.endpoint.model,
            "messages": [m.to_openai() for m in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if tools:
            kwargs["tools"] = [t.to_openai() for t in tools]
        if params.temperature is not None:
            kwargs["temperature"] = params.temperature
        if params.max_tokens is not None:
            kwargs["max_tokens"] = params.max_tokens

        text: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        usage = Usage()
        finish: str | None = None
        pool = self._least_loaded()
        self._in_flight[pool] += 1
        try:
            # NOTE: the SDK sends and retries the request and raises its errors, through its
            # documented raw call (`post(..., cast_to=httpx.Response)`): the body is built here
            # from plain dicts, so its per-call walk over typed params (~8% of the Agent
            # replica's CPU at c=1) is skipped, and the chunks are read as JSON instead of its
            # pydantic models (~25% of the Agent's CPU per token at 1,000 streams);
            # docs/benchmarks.md.
            response = await self._clients[pool].post(
                "/chat/completions", cast_to=httpx.Response, body=kwargs, stream=True, stream_cls=None
            )
            async with aclosing(response):  # its connection goes back to the pool however reading ends
                async for chunk in _sse_json(response.aiter_lines()):
                    if chunk.get("error"):
                        # NOTE: as the SDK's own stream does; the provider's words stay out.
                        raise LLMError("the LLM reported an error mid-stream")
                    if u := chunk.get("usage"):
                        usage = Usage(
                            prompt_tokens=u.get("prompt_tokens") or 0,
                            completion_tokens=u.get("completion_tokens") or 0,
                            total_tokens=u.get("total_tokens") or 0,
                        )
                    for choice in chunk.get("choices") or ():
                        delta = choice.get("delta") or {}
                        if content := delta.get("content"):
                            text.append(content)
                            yield LLMTextDelta(text=content)
                        for tc in delta.get("tool_calls") or ():
                            slot = calls.setdefault(tc.get("index", 0), {"id": "", "name": "", "arguments": ""})
                            if tc.get("id"):
                                slot["id"] = tc["id"]
                            if fn := tc.get("function"):
                                slot["name"] += fn.get("name") or ""
                                slot["arguments"] += fn.get("arguments") or ""
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
        except openai.OpenAIError as exc:
            raise map_openai_error(exc) from None
        except (json.JSONDecodeError, AttributeError, TypeError) as exc:
            raise LLMError(f"the LLM sent a malformed stream chunk ({type(exc).__name__})") from None
        except Exception as exc:
            # NOTE: a connection that breaks mid-stream surfaces as the SDK's transport
            # error (httpx/httpx2, depending on the SDK version), not as an OpenAIError.
            if type(exc).__module__.split(".")[0] in _TRANSPORT_MODULES:
                raise LLMUnavailableError("the LLM stream broke off") from None
            raise
        finally:
            self._in_flight[pool] -= 1

        tool_calls = [
            ToolCall(id=c["id"] or f"call_{i}", name=c["name"], arguments=c["arguments"] or "{}")
            for i, c in sorted(calls.items())
        ]
        yield LLMResult(content="".join(text), tool_calls=tool_calls, usage=usage, finish_reason=finish)


async def _sse_json(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    """The JSON objects of a server-sent event stream's ``data`` fields, until ``[DONE]``.

    NOTE: the body is read to its end after ``[DONE]``: an HTTP/1.1 connection whose
    response was not read to the end is closed instead of going back to the pool, and
    every LLM call would open a new one.
    """
    data: list[str] = []
    done = False
    async for line in lines:
        if done:
            continue
        if line.startswith("data:"):
            data.append(line[6:] if line.startswith("data: ") else line[5:])
            continue
        if line or not data:
            continue  # event:, id:, retry:, comments; or a blank line with no data
        payload = "\n".join(data)
        data.clear()
        if payload.startswith("[DONE]"):
            done = True
            continue
        chunk = json.loads(payload)
        if not isinstance(chunk, dict):
            raise TypeError("a stream chunk is not a JSON object")
        yield chunk
    if data and not done and not (payload := "\n".join(data)).startswith("[DONE]"):
        chunk = json.loads(payload)
        if isinstance(chunk, dict):
            yield chunk
