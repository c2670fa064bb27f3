"""Secrets and URLs from the environment (12-factor), typed with pydantic-settings."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveInt, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Read in every replica's process; nothing here goes into a config file.

    ``DATABASE_URL`` picks the conversation store (PostgreSQL, or a SQLite file;
    unset: SQLite in ``AGENTSERVE_DATA_DIR``). ``LLM_BASE_URL`` set means an
    external OpenAI-compatible endpoint, and the local model is then not deployed.
    """

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", hide_input_in_errors=True
    )

    agentserve_env: Literal["development", "production"] = "development"
    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None
    llm_model: str | None = None
    database_url: SecretStr | None = None
    redis_url: SecretStr | None = None
    database_pool_size: int = 10  # PostgreSQL connections per Agent/Ingress replica
    cors_origins: str = ""  # comma-separated origins allowed by CORS; empty: none
    # Debugging only, unsafe in production (users' words in the logs): the request log
    # lines of chat turns carry the message and the reply. Refused with AGENTSERVE_ENV=production.
    log_message_contents: bool = False

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    agentserve_data_dir: str = str(Path.home() / ".agentserve")
    lancedb_uri: str | None = None  # default: <AGENTSERVE_DATA_DIR>/lancedb
    # Memory per Agent replica for users' tables kept in memory (memory/lance_memory.py); 0: off.
    lancedb_cache_mb: float = Field(default=64.0, ge=0, le=65536)

    @model_validator(mode="after")
    def _production_needs_shared_backends(self) -> Settings:
        """In production every replica must share the same backends, never a pod-local default."""
        if self.agentserve_env != "production":
            return self
        if self.log_message_contents:
            raise ValueError("LOG_MESSAGE_CONTENTS=true puts users' messages in the logs; refused in production")
        missing = [
            name
            for name, value in [
                ("LLM_BASE_URL", self.llm_base_url),
                ("DATABASE_URL", self.database_url),
                ("REDIS_URL", self.redis_url),
                ("LANCEDB_URI", self.lancedb_uri),
            ]
            if not value
        ]
        if missing:
            raise ValueError(f"AGENTSERVE_ENV=production needs {', '.join(missing)} (shared by every replica)")
        url = self.database_url.get_secret_value() if self.database_url else ""
        if not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("AGENTSERVE_ENV=production needs DATABASE_URL to be a PostgreSQL URL")
        return self


class ProcessSettings(BaseSettings):
    """Tuning of the Python process itself, applied by every replica (and ``bench.baseline``) at start.

    Apart from ``Settings`` so that a replica which needs no backend (Embedding,
    ToolExecutor) is not refused for a missing one.
    """

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # The collector's thresholds (gen0 allocations, then counts of gen0 and gen1 passes);
    # JSON in the environment: GC_THRESHOLDS='[700, 10, 10]' restores Python's own.
    # NOTE: a pass stops the replica's loop (every open stream) for as long as the
    # generations it walks are big. A replica holding 1,000 open streams holds ~500k
    # objects: with Python's full passes (after 10 gen1 passes) it stopped for 150-360 ms
    # every 4-5 s; with young generations of 10,000, each gen1 pass took 50-80 ms. So
    # Python's young generations (passes of a few ms) and full passes 100 times rarer
    # (docs/benchmarks.md, "Eighth session"). Ray Serve's throughput-optimised mode
    # (`agentserve run`) also freezes the start-up objects, so full passes skip them.
    gc_thresholds: tuple[PositiveInt, PositiveInt, PositiveInt] = (700, 10, 1000)

    def apply(self) -> None:
        gc.set_threshold(*self.gc_thresholds)
