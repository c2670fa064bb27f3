"""Goal 5's floor: ``make run``'s Ray and Serve with trivial deployments in place of the app's.

``bench.startup --floor`` deploys these with ``configs/local.yaml``'s options
(same application and deployment names, routes, replicas, CPUs, Serve switches),
so what ``agentserve run`` takes to ready with them is what Ray and Serve take by
themselves; the difference to the real app is what the app's own code and models
add. ``/ready`` goes Ingress → Agent → ToolExecutor, as the app's does.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

api = FastAPI()


class Trivial:
    """Takes whatever the app's deployment takes and does nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        pass

    async def ping(self) -> str:
        return "ok"


class TrivialAgent(Trivial):
    def __init__(self, tools: DeploymentHandle, embedding: DeploymentHandle, *args: Any) -> None:
        self.tools = tools

    async def health(self) -> str:
        result: str = await self.tools.ping.remote()
        return result


@serve.ingress(api)
class TrivialIngress:
    def __init__(self, agent: DeploymentHandle, tools: DeploymentHandle) -> None:
        self.agent = agent

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        pass

    @api.get("/ready")
    async def ready(self) -> dict[str, str]:
        return {"status": await self.agent.health.remote()}


def build(args: dict[str, Any] | None = None) -> Application:
    tools = serve.deployment(Trivial, name="ToolExecutor").bind()
    embedding = serve.deployment(Trivial, name="Embedding").bind()
    agent = serve.deployment(TrivialAgent, name="Agent").bind(tools, embedding)
    return serve.deployment(TrivialIngress, name="Ingress").bind(agent, tools)


def build_llm(args: dict[str, Any] | None = None) -> Application:
    return serve.deployment(Trivial, name="LocalLLM").bind()


def floor_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (a Serve config file's dict) with these builders in place of the app's."""
    floor = copy.deepcopy(config)
    for app in floor["applications"]:
        app["import_path"] = "bench.floor_app:build_llm" if app["name"] == "local-llm" else "bench.floor_app:build"
        app["args"] = {}
        for deployment in app.get("deployments", []):
            deployment.pop("user_config", None)  # the app's live settings; nothing here reads them
    return floor
