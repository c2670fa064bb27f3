"""Secrets and URLs from the environment (12-factor), typed with pydantic-settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Read in every replica's process; nothing here goes into a config file.

    ``DATABASE_URL`` picks the conversation store (PostgreSQL, or a SQLite file;
    unset: SQLite in ``AGENTSERVE_DATA_DIR``). ``LLM_BASE_URL`` set means an
    external OpenAI-compatible endpoint, and the local model is then not deployed.
    """

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    agentserve_env: Literal["development", "production"] = "development"
    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None
    llm_model: str | None = None
    database_url: SecretStr | None = None
    redis_url: SecretStr | None = None
    agentserve_data_dir: str = str(Path.home() / ".agentserve")
    lancedb_uri: str | None = None  # default: <AGENTSERVE_DATA_DIR>/lancedb
