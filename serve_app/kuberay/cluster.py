"""Apply, inspect and delete the rendered manifests with the official ``kubernetes`` client.

Apply is server-side apply (``PATCH`` with ``application/apply-patch+yaml`` and the field manager
``agentserve``): one request creates or updates, a field dropped from the manifest is removed from the
object, and fields other managers own (a ``kubectl patch`` annotation) are kept. A field another
manager also sets is a 409 conflict, reported; ``force`` takes it over, like ``kubectl apply
--server-side --force-conflicts``. The RayService goes through ``CustomObjectsApi`` (``ray.io``,
``v1``, ``rayservices``), the PodMonitor too; the Namespace and the Ingress through their typed APIs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from serve_app.kuberay.render import PODMONITOR_SUFFIX

if TYPE_CHECKING:
    from kubernetes.client import ApiClient, ApiException

FIELD_MANAGER = "agentserve"
APPLY_PATCH = "application/apply-patch+yaml"
CUSTOM = {"RayService": ("ray.io", "v1", "rayservices"), "PodMonitor": ("monitoring.coreos.com", "v1", "podmonitors")}
# Only the Secret's metadata: its values never leave the API server.
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


class Echo(Protocol):
    def __call__(self, line: str, err: bool = False) -> None: ...


def load_client(context: str | None = None) -> ApiClient:
    """A client from the kubeconfig (``$KUBECONFIG`` or ``~/.kube/config``, ``context`` or its current one).

    Without a kubeconfig and without ``context``, the pod's service account (in-cluster).

    Raises:
        kubernetes.config.ConfigException: Neither is usable.
    """
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        # $KUBECONFIG read now, not when kubernetes was imported; a list (a:b) is merged, as kubectl does.
        kubeconfig = os.environ.get("KUBECONFIG") or None
        config.load_kube_config(kubeconfig, context=context, client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        if context:
            raise
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return client.ApiClient(configuration)


def reason(exc: ApiException) -> str:
    """The API server's message (its ``Status`` body), else the HTTP reason."""
    try:
        return str(json.loads(exc.body or "")["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {exc.status} {exc.reason}"


def apply_object(api: ApiClient, obj: dict[str, Any], *, force: bool = False, dry_run: bool = False) -> str:
    """Server-side apply one manifest; ``created`` or ``configured``. Raises ``ApiException``."""
    from kubernetes import client

    kind, name, namespace = obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace", "")
    opts: dict[str, Any] = {
        "field_manager": FIELD_MANAGER,
        "force": True if force else None,  # the API refuses force=false on non-apply patches; omit it
        "dry_run": "All" if dry_run else None,
        "_content_type": APPLY_PATCH,
    }
    if kind == "Namespace":
        _, status, _ = client.CoreV1Api(api).patch_namespace_with_http_info(name, obj, **opts)
    elif kind == "Ingress":
        _, status, _ = client.NetworkingV1Api(api).patch_namespaced_ingress_with_http_info(name, namespace, obj, **opts)
    elif kind in CUSTOM:
        group, version, plural = CUSTOM[kind]
        _, status, _ = client.CustomObjectsApi(api).patch_namespaced_custom_object_with_http_info(
            group, version, namespace, plural, name, obj, **opts
        )
    else:
        raise ValueError(f"{kind}: not applied from here")
    return "created" if status == 201 else "configured"


def secret_exists(api: ApiClient, name: str, namespace: str) -> bool:
    from kubernetes import client

    try:
        client.CoreV1Api(api).read_namespaced_secret_with_http_info(name, namespace, _headers={"Accept": METADATA_ONLY})
    except client.ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def apply_manifests(
    api: ApiClient, manifests: list[dict[str, Any]], echo: Echo, *, force: bool = False, dry_run: bool = False
) -> int:
    """Apply in order; the Secret is a template, so only its existence is checked. 0 when all went in.

    NOTE: the Namespace goes first and the RayService only once its Secret exists: pods started without
    it would hang in CreateContainerConfigError.
    """
    from kubernetes import client

    order = {"Namespace": 0, "Secret": 1, "RayService": 2, "Ingress": 3, "PodMonitor": 4}
    for obj in sorted(manifests, key=lambda o: order.get(o["kind"], 9)):
        kind, meta = obj["kind"], obj["metadata"]
        what = f"{kind.lower()}/{meta['name']}"
        try:
            if kind == "Secret":
                if secret_exists(api, meta["name"], meta["namespace"]):
                    echo(f"{what} exists (not applied: the file is a template)")
                    continue
                echo(
                    f"{'warning' if dry_run else 'error'}: {what} does not exist in namespace {meta['namespace']}:\n"
                    "  create it from a filled copy of secret.example.yaml, outside git (kuberay/README.md section 2)",
                    err=True,
                )
                if dry_run:
                    continue
                return 1
            how = apply_object(api, obj, force=force, dry_run=dry_run)
        except client.ApiException as exc:
            if exc.status == 404 and kind == "PodMonitor":
                echo(
                    f"warning: {what} skipped: no {obj['apiVersion']} PodMonitor here (no Prometheus Operator)",
                    err=True,
                )
                continue
            echo(f"error: {what}: {reason(exc)}", err=True)
            if exc.status == 404 and kind == "RayService":
                echo("  no ray.io/v1 RayService in this cluster: install the KubeRay operator (v1.5.1+)", err=True)
            if exc.status == 409:
                echo("  another field manager sets these fields: --force-conflicts takes them over", err=True)
            return 1
        echo(f"{what} {how}" + (" (dry run)" if dry_run else ""))
    return 0


def get_rayservice(api: ApiClient, name: str, namespace: str) -> dict[str, Any]:
    from kubernetes import client

    group, version, plural = CUSTOM["RayService"]
    obj = client.CustomObjectsApi(api).get_namespaced_custom_object(group, version, namespace, plural, name)
    if not isinstance(obj, dict):
        raise TypeError(f"rayservice {namespace}/{name}: the API server sent {type(obj).__name__}, not an object")
    return obj


def describe_status(service: dict[str, Any]) -> tuple[bool, list[str]]:
    """Whether the RayService is Ready, and a few lines saying how it is."""
    meta, status = service["metadata"], service.get("status") or {}
    conditions = {c["type"]: c for c in status.get("conditions", [])}
    ready = (conditions.get("Ready") or {}).get("status") == "True"
    generation = f"generation {meta.get('generation', '?')}, observed {status.get('observedGeneration', '?')}"
    lines = [
        f"rayservice {meta['namespace']}/{meta['name']}: {status.get('serviceStatus') or 'no status yet'}, "
        f"{status.get('numServeEndpoints', 0)} serve endpoints ({generation})"
    ]
    for c in conditions.values():
        lines.append(f"  {c['type']}={c['status']} {c.get('reason', '')}: {c.get('message', '')}".rstrip(": "))
    for which in ("activeServiceStatus", "pendingServiceStatus"):
        cluster = status.get(which) or {}
        if not cluster.get("rayClusterName"):
            continue
        lines.append(f"  {which.removesuffix('ServiceStatus')} cluster {cluster['rayClusterName']}")
        for app, app_status in (cluster.get("applicationStatuses") or {}).items():
            deps = app_status.get("serveDeploymentStatuses") or {}
            lines.append(f"    app {app}: {app_status.get('status')} {app_status.get('message', '')}".rstrip())
            lines += [f"      {d}: {s.get('status')} {s.get('message', '')}".rstrip() for d, s in deps.items()]
    return ready, lines


def delete_all(api: ApiClient, name: str, namespace: str, echo: Echo) -> int:
    """Delete the RayService (KubeRay then deletes its clusters), its Ingress and PodMonitor.

    The Namespace and the Secret stay. 1 when the RayService was not there or a delete failed.
    """
    from kubernetes import client

    custom = client.CustomObjectsApi(api)
    deletes: list[tuple[str, Callable[[], object]]] = [
        (f"rayservice/{name}", lambda: custom.delete_namespaced_custom_object(*_crd("RayService", namespace), name)),
        (f"ingress/{name}", lambda: client.NetworkingV1Api(api).delete_namespaced_ingress(name, namespace)),
        (
            f"podmonitor/{name}{PODMONITOR_SUFFIX}",
            lambda: custom.delete_namespaced_custom_object(*_crd("PodMonitor", namespace), name + PODMONITOR_SUFFIX),
        ),
    ]
    failed = 0
    for what, delete in deletes:
        try:
            delete()
            echo(f"{what} deleted")
        except client.ApiException as exc:
            if exc.status == 404:
                echo(f"{what}: not found in namespace {namespace}")
            else:
                echo(f"error: {what}: {reason(exc)}", err=True)
            # NOTE: an absent RayService is most likely a wrong --name/--namespace: say so in the exit code.
            if exc.status != 404 or what.startswith("rayservice/"):
                failed += 1
    return 1 if failed else 0


def _crd(kind: str, namespace: str) -> tuple[str, str, str, str]:
    group, version, plural = CUSTOM[kind]
    return group, version, namespace, plural
