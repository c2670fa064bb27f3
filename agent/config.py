"""Agent settings that may change live (Serve ``user_config`` → ``reconfigure``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant. Use the tools you are given when they help: "
    "the calculator for arithmetic, current_time for dates and times. "
    "Answer briefly."
)


class AgentConfig(BaseModel):
    """Behaviour of the reasoning loop."""

    model_config = ConfigDict(extra="forbid")

    system_prompt: str = Field(default=DEFAULT_SYSTEM_PROMPT, max_length=20_000)
    temperature: float = Field(default=0.2, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=512, ge=1, le=32_768)
    max_steps: int = Field(default=6, ge=1, le=50)
    tool_timeout_s: float = Field(default=30.0, gt=0, le=600)
    history_limit: int = Field(default=50, ge=0, le=1000)
    memory_top_k: int = Field(default=3, ge=0, le=20, description="memories recalled before a turn; 0 = off")
    memory_min_score: float = Field(default=0.3, ge=-1.0, le=1.0)
    remember_messages: bool = True
    memory_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=120,
        description="how long a turn waits for semantic memory (recall, then remembering); then it goes on without",
    )
    allowed_tools: list[str] | None = Field(
        default=None, description="tools this agent may use (None: all the ToolExecutor offers)"
    )
    max_tool_output_chars: int = Field(default=8000, ge=100, le=200_000)


class LLMEndpoint(BaseModel):
    """Where and how to reach the model."""

    model_config = ConfigDict(extra="forbid")

    base_url: str
    model: str
    api_key: SecretStr = SecretStr("not-needed")
    timeout_s: float = Field(default=60.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)
