"""Check rendered manifests offline, strictly, as an API server would: every kind against its schema.

RayService (and the RayCluster it makes) against KubeRay's real CRDs; core kinds against Kubernetes'
own schemas (``kubernetes-validate``, pinned to ``KUBERNETES_VERSION``); the PodMonitor against a
minimal schema of the fields we use (the Prometheus Operator's CRD is not here: see ``PODMONITOR_SCHEMA``).
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any

import yaml

from serve_app.config_file import validate_serve_config
from serve_app.kuberay.render import ROOT, production_problems

RAYSERVICE_CRD = "ray.io_rayservices.yaml"
RAYCLUSTER_CRD = "ray.io_rayclusters.yaml"
CRD_FILES = {"RayService": RAYSERVICE_CRD, "RayCluster": RAYCLUSTER_CRD}
# First hit wins ($KUBERAY_CRD_DIR before these): a vendored copy, or the shared/ folder beside the checkout.
CRD_DIRS = (ROOT / "kuberay" / "crds", ROOT.parent / "shared" / "kuberay-crds")
# The newest Kubernetes whose schemas kubernetes-validate 1.37.0 bundles; bump both together.
KUBERNETES_VERSION = "1.37.0"
UPGRADE_TYPES = ("NewCluster", "NewClusterWithIncrementalUpgrade", "None")  # the CRD has no enum for it

_DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
_LABEL_NAME = r"^[a-zA-Z_][a-zA-Z0-9_]*$"


def _closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
# NOTE: a SUBSET of monitoring.coreos.com/v1 PodMonitor (prometheus-operator), written by hand with its
# field names, types and patterns: strict on what we render, so a typo fails here; a field we start
# using must be added here first. The API server checks the real CRD (`apply --dry-run`).
PODMONITOR_SCHEMA = _closed(
    {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PodMonitor"},
        "metadata": _closed({"name": {"type": "string"}, "namespace": {"type": "string"}, "labels": _STRING_MAP}),
        "spec": _closed(
            {
                "selector": _closed({"matchLabels": _STRING_MAP}, ("matchLabels",)),
                "podMetricsEndpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": _closed(
                        {
                            "port": {"type": "string", "minLength": 1},
                            "path": {"type": "string", "pattern": "^/"},
                            "interval": {"type": "string", "pattern": _DURATION},
                            "relabelings": {
                                "type": "array",
                                "items": _closed(
                                    {
                                        "sourceLabels": {
                                            "type": "array",
                                            "items": {"type": "string", "pattern": _LABEL_NAME},
                                        },
                                        "targetLabel": {"type": "string", "minLength": 1},
                                    }
                                ),
                            },
                        },
                        ("port",),
                    ),
                },
            },
            ("selector", "podMetricsEndpoints"),
        ),
    },
    ("apiVersion", "kind", "metadata", "spec"),
)


def find_crd(file: str = RAYSERVICE_CRD) -> Path:
    """The CRD file ``file`` (default: the RayService's) from ``$KUBERAY_CRD_DIR`` or ``CRD_DIRS``."""
    dirs = [Path(os.environ["KUBERAY_CRD_DIR"])] if os.environ.get("KUBERAY_CRD_DIR") else []
    for directory in [*dirs, *CRD_DIRS]:
        if (directory / file).is_file():
            return directory / file
    raise FileNotFoundError(f"{file} not found in $KUBERAY_CRD_DIR or {[str(d) for d in CRD_DIRS]}")


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
def crd_schema(path: str) -> tuple[str, dict[str, Any]]:
    """The kind a CRD file defines and the strict ``openAPIV3Schema`` of its ``v1`` version."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 0.3 s instead of 1.7 s for 1 MB
    crd = yaml.load(Path(path).read_text(), Loader=loader)  # noqa: S506 (a safe loader)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return crd["spec"]["names"]["kind"], _strict(version["schema"]["openAPIV3Schema"])


def _messages(errors: Any) -> list[str]:
    out = []
    for err in sorted(errors, key=lambda e: list(map(str, e.absolute_path))):
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path).lstrip(".")
        out.append(f"{where or '<root>'}: {err.message[:300]}")
    return out


def validate_against_crd(obj: dict[str, Any], crd_path: str | None = None) -> None:
    """Raise ``ValueError`` listing every field of a ``ray.io/v1`` object that its CRD's schema refuses.

    ``crd_path`` defaults to the CRD of ``obj``'s kind (RayService or RayCluster), found by ``find_crd``.
    """
    from jsonschema import Draft4Validator  # OpenAPI v3.0 schemas are draft-4 JSON Schema plus x- keywords

    kind = obj.get("kind")
    if crd_path is None and kind not in CRD_FILES:
        raise ValueError(f"kind {kind!r}: no KubeRay CRD for it (one of {sorted(CRD_FILES)})")
    crd_kind, schema = crd_schema(crd_path or str(find_crd(CRD_FILES[str(kind)])))
    errors = _messages(Draft4Validator(schema).iter_errors(obj))
    if (obj.get("apiVersion"), kind) != ("ray.io/v1", crd_kind):
        errors.insert(0, f"apiVersion/kind: {obj.get('apiVersion')}/{kind} is not ray.io/v1/{crd_kind}")
    if errors:
        raise ValueError(f"{crd_kind} refused by the CRD schema:\n  " + "\n  ".join(errors))


def validate_manifest(obj: dict[str, Any], crd_path: str | None = None) -> None:
    """A RayService: its CRD, the RayCluster it makes against that CRD, what neither can say, ``serveConfigV2``."""
    validate_against_crd(obj, crd_path)
    spec, meta = obj.get("spec") or {}, obj.get("metadata") or {}
    # KubeRay creates a RayCluster from rayClusterConfig; its own CRD must accept it too.
    cluster = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": f"{meta.get('name')}-cluster", "namespace": meta.get("namespace")},
        "spec": spec.get("rayClusterConfig") or {},
    }
    validate_against_crd(cluster, str(Path(crd_path).with_name(RAYCLUSTER_CRD)) if crd_path else None)
    # What the operator refuses at reconcile time (the CRD cannot say it).
    problems = [] if spec.get("rayClusterConfig") else ["spec.rayClusterConfig: missing"]
    if not re.fullmatch(r"[a-z]([-a-z0-9]{0,45}[a-z0-9])?", meta.get("name", "")):
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


def validate_core(obj: dict[str, Any]) -> None:
    """A built-in kind against Kubernetes' own schema for ``KUBERNETES_VERSION``, strictly (no unknown field)."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        (message,) = _messages([exc])
        kind = obj.get("kind")
        raise ValueError(f"{kind} refused by the Kubernetes {KUBERNETES_VERSION} schema: {message}") from None
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise ValueError(exc.message) from None


def validate_podmonitor(obj: dict[str, Any]) -> None:
    """A PodMonitor against ``PODMONITOR_SCHEMA`` (the fields we use, strictly)."""
    from jsonschema import Draft7Validator

    if errors := _messages(Draft7Validator(PODMONITOR_SCHEMA).iter_errors(obj)):
        raise ValueError("PodMonitor refused by its schema:\n  " + "\n  ".join(errors))


def validate_object(obj: dict[str, Any], crd_path: str | None = None) -> None:
    """Any manifest of ``kuberay/``, by kind. Raises ``ValueError`` naming what is refused."""
    group = str(obj.get("apiVersion", "")).rpartition("/")[0]
    if obj.get("kind") == "RayService":
        validate_manifest(obj, crd_path)
    elif obj.get("kind") == "PodMonitor":
        validate_podmonitor(obj)
    elif "." not in group or group.endswith(".k8s.io"):  # "v1", apps/v1, networking.k8s.io/v1: built in
        validate_core(obj)
    else:
        raise ValueError(f"{obj.get('apiVersion')}/{obj.get('kind')}: no schema here to check it against")
