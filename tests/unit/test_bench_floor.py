"""Goal 5's floor (``bench.floor_app``) starts what ``configs/local.yaml`` starts, with trivial code."""

from __future__ import annotations

import sys
from pathlib import Path

from ray.serve._private.build_app import build_app
from ray.serve.schema import ServeDeploySchema

from serve_app.config_file import load_serve_config

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # bench/ is not installed

from bench.floor_app import build, build_llm, floor_config  # noqa: E402


def test_the_floor_config_keeps_every_name_route_and_option_but_the_code() -> None:
    config = load_serve_config(REPO / "configs" / "local.yaml")
    floor = floor_config(config)
    ServeDeploySchema.model_validate(floor)
    assert [a["name"] for a in floor["applications"]] == [a["name"] for a in config["applications"]]
    for app, original in zip(floor["applications"], config["applications"], strict=True):
        assert app["import_path"].startswith("bench.floor_app:")
        assert app["route_prefix"] == original["route_prefix"]
        assert app.get("runtime_env") == original.get("runtime_env")
        for dep, orig in zip(app.get("deployments", []), original.get("deployments", []), strict=True):
            assert dep == {k: v for k, v in orig.items() if k != "user_config"}
    assert config["applications"][0]["import_path"] == "serve_app.builder:build_app"  # the original is untouched


def test_the_floor_apps_have_the_apps_deployments() -> None:
    names = {d.name for d in build_app(build(), name="agentserve").deployments}
    assert names == {"Ingress", "Agent", "ToolExecutor", "Embedding"}
    assert [d.name for d in build_app(build_llm(), name="local-llm").deployments] == ["LocalLLM"]
