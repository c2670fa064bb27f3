"""Serve config files: load, and validate with Ray's own schema plus our typed args."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from serve_app.args import AgentServeArgs, LocalLLMArgs

ARGS_BY_IMPORT_PATH: dict[str, type[BaseModel]] = {
    "serve_app.builder:build_app": AgentServeArgs,
    "serve_app.builder:build_local_llm_app": LocalLLMArgs,
}
USER_CONFIG_BY_DEPLOYMENT: dict[str, type[BaseModel]] = {}


def load_serve_config(path: str | Path) -> dict[str, Any]:
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a Serve config (expected a mapping)")
    return data


def config_problem(exc: Exception, option: str | None = "--config") -> str:
    """Why a config file cannot be used, in one line (no traceback); ``option`` chooses another file."""
    if isinstance(exc, FileNotFoundError):
        return f"no such file (choose one with {option})" if option else "no such file"
    if isinstance(exc, yaml.YAMLError):
        return f"not valid YAML: {' '.join(str(exc).split())}"
    return f"invalid: {exc}"


CONFIG_ERRORS = (OSError, ValueError, yaml.YAMLError)  # what config_problem explains


def validate_serve_config(config: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the app and field when the config is invalid."""
    from ray.serve.schema import ServeDeploySchema

    from agent.config import AgentConfig

    ServeDeploySchema.model_validate(config)
    for app in config.get("applications", []):
        model = ARGS_BY_IMPORT_PATH.get(app.get("import_path", ""))
        if model is not None:
            try:
                model.model_validate(app.get("args") or {})
            except Exception as exc:
                raise ValueError(f"application {app.get('name')!r}: invalid args: {exc}") from exc
        for dep in app.get("deployments", []):
            if dep.get("name") == "Ingress" and "user_config" in dep:
                from serve_app.ratelimit.config import RateLimitConfig

                try:
                    RateLimitConfig.model_validate(dep["user_config"].get("rate_limit", {}))
                except Exception as exc:
                    raise ValueError(f"deployment 'Ingress': invalid user_config.rate_limit: {exc}") from exc
            if dep.get("name") == "Agent" and "user_config" in dep:
                try:
                    AgentConfig.model_validate(dep["user_config"])
                except Exception as exc:
                    raise ValueError(f"deployment 'Agent': invalid user_config: {exc}") from exc
