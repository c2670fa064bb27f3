"""Render the KubeRay manifests from a Serve config: Namespace, Secret TEMPLATE, RayService, Ingress, PodMonitor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from serve_app.config_file import load_serve_config, validate_serve_config
from serve_app.serve_switches import SERVE_FAST_PATH

RAY_VERSION = "2.60.0"  # must match the Dockerfile's FROM rayproject/ray:<version>-py311
DEFAULT_IMAGE = "agentserve:0.1.0"
DEFAULT_SECRET = "agentserve-secrets"  # noqa: S105 (the Secret's name)
ROOT = Path(__file__).resolve().parents[2]
FILES = {
    "Namespace": "namespace.yaml",
    "Secret": "secret.example.yaml",
    "RayService": "rayservice.yaml",
    "Ingress": "ingress.yaml",
    "PodMonitor": "podmonitor.yaml",
}
METRICS_PORT = 8080
# Served on the head only: the autoscaler (a sidecar, same network namespace) and the dashboard.
HEAD_METRICS_PORTS = {"as-metrics": 44217, "dash-metrics": 44227}
SERVE_PORT = 8000
PODMONITOR_SUFFIX = "-ray"  # the PodMonitor is <name>-ray
# ingress-nginx, as deploy/nginx/agentserve-proxy.conf: nothing holds an SSE response back, and no
# timeout fires before the Serve proxy's request_timeout_s (the read timeout is that plus 60 s).
INGRESS_NGINX = "nginx.ingress.kubernetes.io/"
INGRESS_ANNOTATIONS = {
    "proxy-buffering": "off",
    "proxy-request-buffering": "off",
    "proxy-http-version": "1.1",
    "proxy-connect-timeout": "5",
    "proxy-body-size": "2m",  # above the app's own 1 MB limit, so clients get its JSON 413
}
# The pods' environment from the Secret, with TEMPLATE values: "change-me" and *.invalid hosts only.
SECRET_TEMPLATE = {
    "LLM_BASE_URL": "https://llm.example.invalid/v1",
    "LLM_API_KEY": "change-me",
    "LLM_MODEL": "gpt-4o-mini",
    "DATABASE_URL": "postgresql://agentserve:change-me@postgres.example.invalid:5432/agentserve",
    "REDIS_URL": "redis://:change-me@redis.example.invalid:6379/0",
    "LANCEDB_URI": "s3://change-me/agentserve/lancedb",
    "JWT_SECRET": "change-me",
}
SECRET_NAMES = frozenset({"LLM_API_KEY", "DATABASE_URL", "REDIS_URL", "JWT_SECRET", "JWT_PUBLIC_KEY"})
# Fixed in the RayService; `env` wins over `envFrom`, so the Secret cannot turn authentication off.
FIXED_ENV = {"AGENTSERVE_ENV": "production", "AUTH_MODE": "required", "RAY_USAGE_STATS_ENABLED": "0"}
# On every Ray container (head and workers), so Ray starts with Serve's fast path, as
# `agentserve run` does locally (HAProxy's files and ports keep their defaults: one cluster a pod).
RAY_ENV = {**FIXED_ENV, **SERVE_FAST_PATH}
GENERATED = (
    "# Generated from {source} by `python -m serve_app.kuberay render`: do not edit.\n"
    "# Change the Serve config (or the render options) and re-render; tests/unit/test_kuberay.py fails on drift.\n"
)
TEMPLATE_HEADER = GENERATED + (
    "# TEMPLATE with placeholder values: never put real secrets in git.\n"
    "# Fill in a copy OUTSIDE the repository and apply that copy (see kuberay/README.md), or:\n"
    "#   kubectl create secret generic {name} -n {namespace} --from-env-file=production.env\n"
    "# Never `kubectl apply -f kuberay/`: this file would overwrite the real Secret. Apply files by name.\n"
    "# A forgotten placeholder fails loudly: JWT_SECRET=change-me stops the Ingress (AGENTSERVE_ENV=production).\n"
)


def serve_config_text(config: dict[str, Any]) -> str:
    """The Serve config as ``serveConfigV2`` text: normalized YAML, comments dropped."""
    return yaml.safe_dump(config, sort_keys=False, width=120)


def production_problems(config: dict[str, Any], worker_cpu: str | None = None, worker_max: int = 0) -> list[str]:
    """What makes a Serve config unfit for production on KubeRay (empty when fit)."""
    problems, need_max = [], 0.0
    if config.get("http_options", {}).get("host") != "0.0.0.0":
        problems.append("http_options.host must be 0.0.0.0: the serve Service reaches the proxy on the pod IP")
    for app in config.get("applications", []):
        name, deps = app.get("name"), app.get("deployments", [])
        if name == "local-llm" or app.get("import_path", "").endswith(":build_local_llm_app"):
            problems.append(f"application {name!r}: production calls an external LLM (LLM_BASE_URL)")
        # NOTE: runtime_env env_vars win over the pod's env, so they could undo FIXED_ENV.
        for env in [app.get("runtime_env"), *[(d.get("ray_actor_options") or {}).get("runtime_env") for d in deps]]:
            env_vars = (env or {}).get("env_vars") or {}
            problems += [f"application {name!r}: put {k} in the Secret" for k in sorted(SECRET_NAMES & set(env_vars))]
            problems += [
                f"application {name!r}: runtime_env sets {k}={env_vars[k]}"
                for k, v in FIXED_ENV.items()
                if k in env_vars and str(env_vars[k]).lower() != v
            ]
        for dep in deps:
            cpus = float((dep.get("ray_actor_options") or {}).get("num_cpus", 1))
            most = (dep.get("autoscaling_config") or {}).get("max_replicas", dep.get("num_replicas", 1))
            need_max += cpus * (most if isinstance(most, int) else 1)  # num_replicas may be "auto"
            if worker_cpu is not None and cpus > float(worker_cpu):
                problems.append(f"deployment {dep.get('name')!r}: {cpus} CPUs do not fit a {worker_cpu}-CPU worker")
    if worker_cpu is not None and need_max > worker_max * float(worker_cpu):
        problems.append(f"replicas at max_replicas need {need_max:g} CPUs; {worker_max} workers offer fewer")
    return problems


def _pod_template(role: str, ports: dict[str, int], cpu: str, memory: str, common: dict[str, Any]) -> dict[str, Any]:
    size = {"cpu": cpu, "memory": memory}
    container = {
        "name": f"ray-{role}",
        "image": common["image"],
        "imagePullPolicy": "IfNotPresent",
        "envFrom": [{"secretRef": {"name": common["secret_name"]}}],
        "env": [{"name": k, "value": v} for k, v in RAY_ENV.items()],
        "ports": [{"name": n, "containerPort": p} for n, p in ports.items()],
        # requests == limits: Guaranteed QoS, and Ray reads its CPU and memory from the limits.
        "resources": {"requests": dict(size), "limits": dict(size)},
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],  # noqa: S108 (a mount, not a temp file)
        "securityContext": {"allowPrivilegeEscalation": False},
    }
    scrape = {"prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT)}
    return {
        "metadata": {"labels": dict(common["labels"]), "annotations": scrape},
        "spec": {
            "containers": [container],
            # Ray's object store lives in /dev/shm; a pod's default is 64 MiB.
            "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}}],
            # Longer than graceful_shutdown_timeout_s (120 s), so draining streams are not killed.
            "terminationGracePeriodSeconds": 150,
        },
    }


def render_rayservice(
    serve_config_path: str | Path,
    *,
    name: str = "agentserve",
    namespace: str = "agentserve",
    image: str = DEFAULT_IMAGE,
    secret_name: str = DEFAULT_SECRET,
    head_cpu: str = "2",
    head_memory: str = "8Gi",
    worker_cpu: str = "4",
    worker_memory: str = "16Gi",
    worker_replicas: int = 2,
    worker_min: int = 2,
    worker_max: int = 8,
) -> dict[str, Any]:
    """The ``ray.io/v1`` RayService serving the config at ``serve_config_path``.

    Raises:
        ValueError: The Serve config is invalid or unfit for production, or the worker sizes are inconsistent.
    """
    if not 0 <= worker_min <= worker_replicas <= worker_max:
        raise ValueError("need 0 <= worker_min <= worker_replicas <= worker_max")
    config = load_serve_config(serve_config_path)
    validate_serve_config(config)
    problems = production_problems(config, worker_cpu, worker_max)
    if problems:
        raise ValueError(f"{serve_config_path}: " + "; ".join(problems))
    common = {"image": image, "secret_name": secret_name, "labels": {"app.kubernetes.io/name": name}}
    head_ports = {"gcs-server": 6379, "dashboard": 8265, "serve": SERVE_PORT, "metrics": METRICS_PORT}
    head_ports.update(HEAD_METRICS_PORTS)
    request_timeout_s = int(config.get("http_options", {}).get("request_timeout_s", 60))
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": name, "namespace": namespace, "labels": common["labels"]},
        "spec": {
            "upgradeStrategy": {"type": "NewCluster"},
            # After a cluster swap the old cluster lives as long as the longest request the proxy allows.
            "rayClusterDeletionDelaySeconds": max(60, request_timeout_s),
            # The head runs GCS, the Serve controller and the dashboard: no user traffic goes through it.
            "excludeHeadPodFromServeSvc": True,
            "serveConfigV2": serve_config_text(config),
            "rayClusterConfig": {
                "rayVersion": RAY_VERSION,
                "enableInTreeAutoscaling": True,
                "autoscalerOptions": {"upscalingMode": "Default", "idleTimeoutSeconds": 120},
                # Ray 2.60 enables token auth; KubeRay then makes the token Secret and gives it to every
                # Ray container and to its own dashboard client (which submits serveConfigV2).
                "authOptions": {"mode": "token"},
                "headGroupSpec": {
                    # num-cpus 0: no replica is ever scheduled on the head.
                    "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0", "metrics-export-port": "8080"},
                    "template": _pod_template("head", head_ports, head_cpu, head_memory, common),
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "cpu",
                        "replicas": worker_replicas,
                        "minReplicas": worker_min,
                        "maxReplicas": worker_max,
                        # The app passes small DTOs: 1 GiB of object store leaves the rest to the replicas.
                        "rayStartParams": {"metrics-export-port": "8080", "object-store-memory": str(1 << 30)},
                        "template": _pod_template(
                            "worker", {"serve": SERVE_PORT, "metrics": METRICS_PORT}, worker_cpu, worker_memory, common
                        ),
                    }
                ],
            },
        },
    }


def render_ingress(service: dict[str, Any], host: str | None = None, ingress_class: str = "nginx") -> dict[str, Any]:
    """An ingress-nginx Ingress, set up for SSE, in front of KubeRay's ``<name>-serve-svc``.

    KubeRay creates and owns that Service (port 8000, the pods whose Serve proxy is healthy) and moves
    it to the new cluster after an upgrade, so the Ingress never needs to change. With ``host``, TLS
    from the Secret ``<name>-tls`` (cert-manager or your own); without, every host of the class.
    """
    name, meta = service["metadata"]["name"], service["metadata"]
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    timeout = str(int(config.get("http_options", {}).get("request_timeout_s", 60)) + 60)
    annotations = {**INGRESS_ANNOTATIONS, "proxy-read-timeout": timeout, "proxy-send-timeout": timeout}
    backend = {"service": {"name": f"{name}-serve-svc", "port": {"number": SERVE_PORT}}}
    rule: dict[str, Any] = {"http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}}
    spec: dict[str, Any] = {"ingressClassName": ingress_class, "rules": [rule]}
    if host:
        rule["host"] = host
        spec["tls"] = [{"hosts": [host], "secretName": f"{name}-tls"}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": dict(meta["labels"]),
            "annotations": {INGRESS_NGINX + k: v for k, v in sorted(annotations.items())},
        },
        "spec": spec,
    }


def render_podmonitor(service: dict[str, Any]) -> dict[str, Any]:
    """A Prometheus Operator PodMonitor for every Ray pod of the RayService (head and workers)."""
    meta = service["metadata"]

    # Ray's Grafana dashboards group by ray_io_cluster; the node type tells head from workers.
    def relabel() -> list[dict[str, Any]]:  # a new list each time: YAML would alias a shared one
        return [
            {"sourceLabels": [f"__meta_kubernetes_pod_label_{k}"], "targetLabel": k}
            for k in ("ray_io_cluster", "ray_io_node_type")
        ]

    ports = ["metrics", *HEAD_METRICS_PORTS]  # a pod without the named port (a worker) is not scraped on it
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {
            "name": meta["name"] + PODMONITOR_SUFFIX,
            "namespace": meta["namespace"],
            "labels": dict(meta["labels"]),
        },
        "spec": {
            "selector": {"matchLabels": dict(meta["labels"])},
            "podMetricsEndpoints": [
                {"port": port, "path": "/metrics", "interval": "15s", "relabelings": relabel()} for port in ports
            ],
        },
    }


def render_manifests(
    serve_config_path: str | Path, *, host: str | None = None, ingress_class: str = "nginx", **options: Any
) -> list[dict[str, Any]]:
    """The Namespace, the Secret TEMPLATE (placeholders only), the RayService, its Ingress and PodMonitor.

    ``options`` go to ``render_rayservice``; ``host`` and ``ingress_class`` to ``render_ingress``.
    """
    service = render_rayservice(serve_config_path, **options)
    meta = {"namespace": service["metadata"]["namespace"], "labels": service["metadata"]["labels"]}
    secret = {"name": options.get("secret_name", DEFAULT_SECRET), **meta}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": meta["namespace"], "labels": meta["labels"]}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": secret, "type": "Opaque", "stringData": SECRET_TEMPLATE},
        service,
        render_ingress(service, host, ingress_class),
        render_podmonitor(service),
    ]


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (``serveConfigV2``) as literal blocks."""


_Dumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, "|" if "\n" in s else None))


def render_files(serve_config_path: str | Path, **options: Any) -> dict[str, str]:
    """File name → text, as ``render`` writes them."""
    path = Path(serve_config_path).resolve()
    source = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    files: dict[str, str] = {}
    for obj in render_manifests(serve_config_path, **options):
        meta = obj["metadata"]
        header = TEMPLATE_HEADER if obj["kind"] == "Secret" else GENERATED
        header = header.format(source=source, name=meta["name"], namespace=meta.get("namespace", ""))
        files[FILES[obj["kind"]]] = header + yaml.dump(obj, Dumper=_Dumper, sort_keys=False, width=120)
    return files
