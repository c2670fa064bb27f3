"""The embedded default LLM: a bundled small GGUF model served as an OpenAI-compatible chat API.

``args`` (typed deployment args), ``engine`` (llama-cpp-python, Ray-free), ``app`` (FastAPI,
Ray-free); ``deployments.local_llm`` puts them on Ray Serve.
"""

from serve_app.local_llm.app import create_local_llm_app
from serve_app.local_llm.args import LocalLLMArgs
from serve_app.local_llm.engine import LlamaCppEngine, LocalLLMRequestError, bundled_model_path

__all__ = [
    "LlamaCppEngine",
    "LocalLLMArgs",
    "LocalLLMRequestError",
    "bundled_model_path",
    "create_local_llm_app",
]
