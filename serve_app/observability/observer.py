"""The core's ``Observer``, recording into the process's metrics."""

from __future__ import annotations

from agent.dto import ToolErrorKind
from serve_app.observability.metrics import get_metrics

UNKNOWN_TOOL = "_unknown"


class MetricsObserver:
    """``agent.ports.Observer``, ``MemoryObserver`` and ``VectorSearchObserver``: LLM and tool calls,
    semantic memory and its vector store, as metrics."""

    def on_llm_call(
        self,
        model: str,
        ok: bool,
        ttft_s: float | None,
        duration_s: float,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> None:
        metrics = get_metrics()
        metrics.llm_call(model, ok, prompt_tokens, completion_tokens)
        per_token = None
        if ok and ttft_s is not None and completion_tokens > 1:
            per_token = max(duration_s - ttft_s, 0.0) / (completion_tokens - 1)
        metrics.llm_timing(model, ttft_s, per_token)

    def on_tool_call(self, name: str, outcome: str, duration_s: float) -> None:
        # NOTE: a name the model made up would be a new label value each time: fold them.
        tool = UNKNOWN_TOOL if outcome == ToolErrorKind.NOT_FOUND else name
        get_metrics().tool_call(tool, outcome, duration_s)

    def on_memory_recall(self, outcome: str, duration_s: float) -> None:
        get_metrics().memory_recall(outcome, duration_s)

    def on_memory_write(self, outcome: str, count: int) -> None:
        get_metrics().memory_writes(outcome, count)

    def on_memory_queue(self, delta: int) -> None:
        get_metrics().memory_queue(delta)

    def on_vector_search(self, path: str) -> None:
        get_metrics().vector_search(path)

    def on_vector_cache(self, delta_bytes: int) -> None:
        get_metrics().vector_cache(delta_bytes)
