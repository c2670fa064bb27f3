"""Typed application args: the ``args:`` block of a Serve config, validated strictly."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from agent.config import AgentConfig, LLMEndpoint
from memory.embedder import Precision
from serve_app.local_llm.args import LocalLLMArgs
from serve_app.settings import Settings


class LLMArgs(BaseModel):
    """Which model to call. Secrets never go here: ``LLM_API_KEY`` comes from the environment."""

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = Field(default=None, description="External endpoint; LLM_BASE_URL overrides it.")
    model: str = "smollm2-135m-instruct"
    local_base_url: str = Field(
        default="http://127.0.0.1:8000/llm/v1",
        description="The LocalLLM application's route, used when no external endpoint is set.",
    )
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)
    context_window: int = Field(default=8192, ge=256, description="The model's context, in tokens.")

    def endpoint(self, settings: Settings) -> LLMEndpoint:
        base_url = settings.llm_base_url or self.base_url or self.local_base_url
        key = settings.llm_api_key or SecretStr("not-needed")
        return LLMEndpoint(
            base_url=base_url,
            model=settings.llm_model or self.model,
            api_key=key,
            timeout_s=self.timeout_s,
            max_retries=self.max_retries,
        )


class EmbeddingArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_path: str | None = None
    # NOTE: 32, not more: on CPU the model encodes as many texts/s in batches of 32 as of
    # 64 (1 and 2 torch threads here), while a bigger batch makes every call in it wait
    # longer, and with as many callers as the batch holds the model idles while one
    # batch's replies go out and the next batch's calls come in (docs/benchmarks.md,
    # "Ninth session"). A GPU replica wants bigger batches: set it in the config.
    max_batch_size: int = Field(default=32, ge=1, le=1024)
    batch_wait_timeout_s: float = Field(default=0.005, ge=0, le=1)
    # NOTE: the model runs in a child process of the replica (memory.encoder_process),
    # so its Python never waits for the GIL that Serve's request handling holds.
    model_process: bool = True
    # A batch still encoding after this long fails the replica's health check, and Serve
    # replaces the replica: a stuck model process would otherwise hold every call.
    model_stall_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    # NOTE: auto runs the model in bfloat16 where the CPU computes it natively (AVX512_BF16,
    # AMX): ~3x the texts/s in batches and ~1.9x one at a time here, vectors at cosine
    # >= 0.9999 to float32's, so memories stored either way stay comparable. Elsewhere, and
    # for a model whose bfloat16 vectors drift further (checked at load), float32.
    precision: Precision = "auto"


class AgentServeArgs(BaseModel):
    """Args of ``serve_app.builder:build_app``."""

    model_config = ConfigDict(extra="forbid")

    llm: LLMArgs = Field(default_factory=LLMArgs)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    tools: list[str] = Field(default_factory=list, description="Extra tools as 'module:Class' import paths.")
    embedding: EmbeddingArgs = Field(default_factory=EmbeddingArgs)


__all__ = ["AgentServeArgs", "EmbeddingArgs", "LLMArgs", "LocalLLMArgs"]
