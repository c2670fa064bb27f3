"""Serve configs and application args: validated by Ray's schema and ours, without a cluster."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from serve_app.args import AgentServeArgs
from serve_app.cli import prepare_config
from serve_app.config_file import load_serve_config, validate_serve_config

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ROOT / "configs" / "local.yaml"


def test_local_config_is_valid() -> None:
    config = load_serve_config(LOCAL)
    validate_serve_config(config)
    apps = {a["name"]: a for a in config["applications"]}
    assert set(apps) == {"agentserve", "local-llm"}
    deps = {d["name"]: d for d in apps["agentserve"]["deployments"]}
    assert set(deps) == {"Ingress", "Agent", "ToolExecutor", "Embedding"}
    for d in deps.values():
        assert d["max_ongoing_requests"] > 5 and "autoscaling_config" in d
        assert 0 < d["ray_actor_options"]["num_cpus"] < 1
    assert {"system_prompt", "temperature", "max_steps"} <= set(deps["Agent"]["user_config"])


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("args", "llm", "api_key"), "sk-secret", "api_key"),
        (("args", "agent", "max_steps"), 0, "max_steps"),
        (("args", "nope"), 1, "nope"),
    ],
)
def test_bad_args_are_refused_naming_the_field(path: tuple[str, ...], value: object, message: str) -> None:
    config = copy.deepcopy(load_serve_config(LOCAL))
    node = config["applications"][0]
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    with pytest.raises(ValueError, match=message):
        validate_serve_config(config)


def test_bad_user_config_is_refused() -> None:
    config = copy.deepcopy(load_serve_config(LOCAL))
    agent = next(d for d in config["applications"][0]["deployments"] if d["name"] == "Agent")
    agent["user_config"]["temperature"] = 9
    with pytest.raises(ValueError, match="temperature"):
        validate_serve_config(config)


def test_ray_schema_rejects_a_bad_deployment_option() -> None:
    config = copy.deepcopy(load_serve_config(LOCAL))
    config["applications"][0]["deployments"][0]["max_ongoing_requests"] = "many"
    with pytest.raises(ValidationError):
        validate_serve_config(config)


def test_external_llm_drops_the_local_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLM_BASE_URL", raising=False)
    assert [a["name"] for a in prepare_config(str(LOCAL), None)["applications"]] == ["agentserve", "local-llm"]
    monkeypatch.setenv("LLM_BASE_URL", "https://llm.example/v1")
    assert [a["name"] for a in prepare_config(str(LOCAL), 9000)["applications"]] == ["agentserve"]


def test_port_override_moves_the_local_llm_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLM_BASE_URL", raising=False)
    config = prepare_config(str(LOCAL), 9123)
    assert config["http_options"]["port"] == 9123
    assert config["applications"][0]["args"]["llm"]["local_base_url"] == "http://127.0.0.1:9123/llm/v1"


def test_llm_endpoint_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    from serve_app.settings import Settings

    args = AgentServeArgs.model_validate({"llm": {"base_url": None, "model": "m1"}})
    monkeypatch.delenv("LLM_BASE_URL", raising=False)
    monkeypatch.delenv("LLM_MODEL", raising=False)
    assert args.llm.endpoint(Settings(_env_file=None)).base_url == "http://127.0.0.1:8000/llm/v1"  # type: ignore[call-arg]
    monkeypatch.setenv("LLM_BASE_URL", "https://api.example/v1")
    monkeypatch.setenv("LLM_MODEL", "gpt-x")
    monkeypatch.setenv("LLM_API_KEY", "sk-abc")
    ep = args.llm.endpoint(Settings(_env_file=None))  # type: ignore[call-arg]
    assert (ep.base_url, ep.model, ep.api_key.get_secret_value()) == ("https://api.example/v1", "gpt-x", "sk-abc")


@pytest.mark.parametrize("import_path", ["serve_app.builder:build_app", "serve_app.builder:build_local_llm_app"])
def test_config_builders_pass_serves_own_builder_check(import_path: str) -> None:
    """What `serve run` / `serve deploy` do with a config's import_path and args."""
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.schema import ServeApplicationSchema

    config = load_serve_config(LOCAL)
    app_cfg = next(a for a in config["applications"] if a["import_path"] == import_path)
    module, name = import_path.split(":")
    builder = getattr(__import__(module, fromlist=[name]), name)
    app = call_user_app_builder_with_args_if_necessary(builder, app_cfg["args"])
    assert type(app).__name__ == "Application"
    ServeApplicationSchema.model_validate(app_cfg)


def test_build_app_binds_four_deployments_without_a_cluster() -> None:
    from serve_app.builder import build_app

    app = build_app({"llm": {"base_url": "http://127.0.0.1:1/v1"}})
    assert type(app).__name__ == "Application"
    with pytest.raises(ValidationError):
        build_app({"llm": {"unknown": 1}})


def test_production_settings_refuse_pod_local_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    from serve_app.settings import Settings

    for name in ["LLM_BASE_URL", "DATABASE_URL", "REDIS_URL", "LANCEDB_URI"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AGENTSERVE_ENV", "production")
    with pytest.raises(ValueError, match="LLM_BASE_URL, DATABASE_URL, REDIS_URL, LANCEDB_URI"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    monkeypatch.setenv("LLM_BASE_URL", "https://llm.example/v1")
    monkeypatch.setenv("DATABASE_URL", "sqlite:////tmp/secret-pw.db")
    monkeypatch.setenv("REDIS_URL", "redis://r:6379/0")
    monkeypatch.setenv("LANCEDB_URI", "s3://bucket/memory")
    with pytest.raises(ValueError, match="PostgreSQL") as info:
        Settings(_env_file=None)  # type: ignore[call-arg]
    assert "secret-pw" not in str(info.value)
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:secret-pw@db:5432/app")
    assert Settings(_env_file=None).agentserve_env == "production"  # type: ignore[call-arg]


def test_cors_origins_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from serve_app.settings import Settings

    monkeypatch.setenv("CORS_ORIGINS", "https://a.example, https://b.example,")
    assert Settings(_env_file=None).cors_origin_list == ["https://a.example", "https://b.example"]  # type: ignore[call-arg]
    monkeypatch.delenv("CORS_ORIGINS")
    assert Settings(_env_file=None).cors_origin_list == []  # type: ignore[call-arg]


@pytest.mark.parametrize("path", [LOCAL, ROOT / "configs" / "production.yaml"])
def test_every_embedding_replica_runs_its_model_off_the_main_loop(path: Path) -> None:
    """The switch is in the code defaults and in each config (a config's ray_actor_options replace the code's)."""
    from ray.serve._private.utils import override_runtime_envs_except_env_vars

    from serve_app.builder import DEPLOYMENT_OPTIONS, EMBEDDING_ENV

    assert DEPLOYMENT_OPTIONS["Embedding"]["ray_actor_options"]["runtime_env"]["env_vars"] == EMBEDDING_ENV
    [app] = [a for a in load_serve_config(path)["applications"] if a["name"] == "agentserve"]
    [emb] = [d for d in app["deployments"] if d["name"] == "Embedding"]
    # As Serve merges them: the app's env_vars stay, the deployment's are added.
    merged = override_runtime_envs_except_env_vars(app.get("runtime_env", {}), emb["ray_actor_options"]["runtime_env"])
    assert merged["env_vars"].items() >= {**app.get("runtime_env", {}).get("env_vars", {}), **EMBEDDING_ENV}.items()


def test_importing_the_cli_leaves_ray_unimported() -> None:
    # `agentserve run` puts Serve's switches in the environment before it imports Ray. Serve
    # reads them once, on import, and a handle made afterwards carries its transport into
    # the replicas it is passed to: had the CLI imported Serve first, every hop of the app
    # would go over Ray's actor calls, ~2x a gRPC hop here (bench/hop.py, docs/benchmarks.md).
    code = "import sys, serve_app.cli; sys.exit('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False).returncode == 0
