"""KubeRay manifests: a RayService whose ``serveConfigV2`` is a file of ``configs/``, rendered and checked offline.

``python -m serve_app.kuberay render --config configs/production.yaml --out kuberay/`` writes the
manifests; ``validate FILE...`` checks them against the real RayService CRD schema and our Serve
config checks; ``apply`` and ``status`` print the kubectl commands (this module never calls a cluster).
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from serve_app.config_file import load_serve_config, validate_serve_config

RAY_VERSION = "2.60.0"  # must match the Dockerfile's FROM rayproject/ray:<version>-py311
DEFAULT_IMAGE = "agentserve:0.1.0"
DEFAULT_SECRET = "agentserve-secrets"  # noqa: S105 (the Secret's name)
ROOT = Path(__file__).resolve().parents[1]
CRD_FILE = "ray.io_rayservices.yaml"
# First hit wins ($KUBERAY_CRD_DIR before these): a vendored copy, or the shared/ folder beside the checkout.
CRD_DIRS = (ROOT / "kuberay" / "crds", ROOT.parent / "shared" / "kuberay-crds")
FILES = {"Namespace": "namespace.yaml", "Secret": "secret.example.yaml", "RayService": "rayservice.yaml"}
UPGRADE_TYPES = ("NewCluster", "NewClusterWithIncrementalUpgrade", "None")  # the CRD has no enum for it
METRICS_PORT = 8080
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


def _pod_template(role: str, ports: dict[str, int], cpu: str, memory: str, common: dict[str, Any]) -> dict:
    size = {"cpu": cpu, "memory": memory}
    container = {
        "name": f"ray-{role}",
        "image": common["image"],
        "imagePullPolicy": "IfNotPresent",
        "envFrom": [{"secretRef": {"name": common["secret_name"]}}],
        "env": [{"name": k, "value": v} for k, v in FIXED_ENV.items()],
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
    head_ports = {"gcs-server": 6379, "dashboard": 8265, "serve": 8000, "metrics": METRICS_PORT}
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
                            "worker", {"serve": 8000, "metrics": METRICS_PORT}, worker_cpu, worker_memory, common
                        ),
                    }
                ],
            },
        },
    }


def render_manifests(serve_config_path: str | Path, **options: Any) -> list[dict[str, Any]]:
    """The Namespace, the Secret TEMPLATE (placeholders only) and the RayService."""
    service = render_rayservice(serve_config_path, **options)
    meta = {"namespace": service["metadata"]["namespace"], "labels": service["metadata"]["labels"]}
    secret = {"name": options.get("secret_name", DEFAULT_SECRET), **meta}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": meta["namespace"], "labels": meta["labels"]}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": secret, "type": "Opaque", "stringData": SECRET_TEMPLATE},
        service,
    ]


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (``serveConfigV2``) as literal blocks."""


_Dumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, "|" if "\n" in s else None))


def render_files(serve_config_path: str | Path, **options: Any) -> dict[str, str]:
    """File name → text, as ``render`` writes them."""
    path = Path(serve_config_path).resolve()
    source = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    files = {}
    for obj in render_manifests(serve_config_path, **options):
        meta = obj["metadata"]
        header = TEMPLATE_HEADER if obj["kind"] == "Secret" else GENERATED
        header = header.format(source=source, name=meta["name"], namespace=meta.get("namespace", ""))
        files[FILES[obj["kind"]]] = header + yaml.dump(obj, Dumper=_Dumper, sort_keys=False, width=120)
    return files


def find_crd() -> Path:
    dirs = [Path(os.environ["KUBERAY_CRD_DIR"])] if os.environ.get("KUBERAY_CRD_DIR") else []
    for directory in [*dirs, *CRD_DIRS]:
        if (directory / CRD_FILE).is_file():
            return directory / CRD_FILE
    raise FileNotFoundError(f"{CRD_FILE} not found in $KUBERAY_CRD_DIR or {[str(d) for d in CRD_DIRS]}")


def _strict(schema: Any) -> Any:
    """Forbid unknown fields where the API server prunes or rejects them (no preserve-unknown-fields)."""
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: {n: _strict(s) for n, s in v.items()} if k == "properties" else _strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.lru_cache(maxsize=4)
def crd_schema(path: str | None = None) -> dict[str, Any]:
    """The strict ``openAPIV3Schema`` of the CRD's ``v1`` version."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 0.3 s instead of 1.7 s for 1 MB
    crd = yaml.load(Path(path or find_crd()).read_text(), Loader=loader)  # noqa: S506 (a safe loader)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return _strict(version["schema"]["openAPIV3Schema"])


def validate_against_crd(obj: dict[str, Any], crd_path: str | None = None) -> None:
    """Raise ``ValueError`` listing every field of ``obj`` that the RayService v1 schema refuses."""
    from jsonschema import Draft4Validator  # OpenAPI v3.0 schemas are draft-4 JSON Schema plus x- keywords

    errors = [f"apiVersion/kind: {obj.get('apiVersion')}/{obj.get('kind')} is not ray.io/v1/RayService"]
    errors = errors if (obj.get("apiVersion"), obj.get("kind")) != ("ray.io/v1", "RayService") else []
    for err in sorted(Draft4Validator(crd_schema(crd_path)).iter_errors(obj), key=lambda e: list(map(str, e.path))):
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path).lstrip(".")
        errors.append(f"{where or '<root>'}: {err.message[:300]}")
    if errors:
        raise ValueError("RayService refused by the CRD schema:\n  " + "\n  ".join(errors))


def validate_manifest(obj: dict[str, Any], crd_path: str | None = None) -> None:
    """The CRD schema, what it cannot express, and ``serveConfigV2`` through ``validate_serve_config``."""
    validate_against_crd(obj, crd_path)
    spec = obj.get("spec") or {}
    # What the operator refuses at reconcile time (the CRD cannot say it).
    problems = [] if spec.get("rayClusterConfig") else ["spec.rayClusterConfig: missing"]
    if not re.fullmatch(r"[a-z]([-a-z0-9]{0,45}[a-z0-9])?", (obj.get("metadata") or {}).get("name", "")):
        problems.append("metadata.name: a DNS-1035 label of at most 47 characters")
    if (upgrade := (spec.get("upgradeStrategy") or {}).get("type", "NewCluster")) not in UPGRADE_TYPES:
        problems.append(f"spec.upgradeStrategy.type: {upgrade!r} is not one of {UPGRADE_TYPES}")
    for group in (spec.get("rayClusterConfig") or {}).get("workerGroupSpecs", []):
        if group["minReplicas"] > group["maxReplicas"]:
            problems.append(f"worker group {group['groupName']!r}: minReplicas > maxReplicas")
    if problems:
        raise ValueError("RayService refused by KubeRay:\n  " + "\n  ".join(problems))
    config = yaml.safe_load(spec.get("serveConfigV2") or "")
    if not isinstance(config, dict):
        raise ValueError("spec.serveConfigV2: not a Serve config (expected a YAML mapping)")
    validate_serve_config(config)
    if problems := production_problems(config):
        raise ValueError("spec.serveConfigV2: " + "; ".join(problems))


def cmd_render(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    opts = {"name": args.name, "namespace": args.namespace, "image": args.image}
    for file_name, text in render_files(args.config, **opts).items():
        (out / file_name).write_text(text)
        print(out / file_name)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.files:
        try:
            docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if isinstance(d, dict)]
        except (OSError, yaml.YAMLError) as exc:
            docs, failed = [], failed + 1
            print(f"{path}: {exc}", file=sys.stderr)
        for doc in docs:
            what = f"{path}: {doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
            if doc.get("kind") != "RayService":
                print(f"{what}: not a RayService, skipped")
                continue
            try:
                validate_manifest(doc)
                print(f"{what}: ok")
            except ValueError as exc:
                failed += 1
                print(f"{what}: {exc}", file=sys.stderr)
    return 1 if failed else 0


def cmd_apply(args: argparse.Namespace) -> int:
    d = Path(args.dir)
    if cmd_validate(argparse.Namespace(files=[str(d / FILES["RayService"])])):
        return 1
    print("# Nothing is applied from here. Against the cluster, file by file (never -f on the directory):")
    print(f"kubectl apply -f {d / FILES['Namespace']}")
    print(f"kubectl apply -f <your filled copy of {d / FILES['Secret']}>  # first time, or when a value changes")
    print(f"kubectl apply -f {d / FILES['RayService']}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    n, ns, head = args.name, args.namespace, f"ray.io/node-type=head,app.kubernetes.io/name={args.name}"
    print(f"kubectl get rayservice {n} -n {ns}")
    print(f"kubectl describe rayservice {n} -n {ns}")
    print(f"kubectl get raycluster,pods -n {ns} -l app.kubernetes.io/name={n} -o wide")
    print(f"kubectl exec -n {ns} $(kubectl get pod -n {ns} -l {head} -o name | head -1) -c ray-head -- serve status")
    return 0


def _add_subcommands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    render = sub.add_parser("render", help="write namespace.yaml, secret.example.yaml, rayservice.yaml")
    render.add_argument("--config", default="configs/production.yaml")
    render.add_argument("--out", default="kuberay")
    render.add_argument("--image", default=DEFAULT_IMAGE, help="e.g. registry.example.com/agentserve:0.1.0")
    validate = sub.add_parser("validate", help="check RayService manifests: CRD schema, serveConfigV2")
    validate.add_argument("files", nargs="+")
    apply = sub.add_parser("apply", help="validate, then print the kubectl commands (applies nothing)")
    apply.add_argument("--dir", default="kuberay")
    status = sub.add_parser("status", help="print the kubectl commands that show the RayService's state")
    for p in (render, status):
        p.add_argument("--name", default="agentserve")
        p.add_argument("--namespace", default="agentserve")
    for p, func in ((render, cmd_render), (validate, cmd_validate), (apply, cmd_apply), (status, cmd_status)):
        p.set_defaults(func=func)


def add_kuberay_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``kuberay render|validate|apply|status`` on the ``agentserve`` parser's subcommands."""
    kuberay = sub.add_parser("kuberay", help="KubeRay manifests: render, validate, kubectl commands")
    _add_subcommands(kuberay.add_subparsers(dest="kuberay_command", required=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve_app.kuberay", description=__doc__)
    _add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
