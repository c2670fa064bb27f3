"""The manifests around the RayService: each kind against its schema, the Ingress set up for SSE, the PodMonitor.

Core kinds go through Kubernetes' own schemas (kubernetes-validate, strict), the RayService's cluster through
KubeRay's RayCluster CRD, the PodMonitor through the hand-written subset of its schema.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from serve_app import kuberay
from serve_app.config_file import load_serve_config

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ROOT / "configs" / "production.yaml"
NGINX = ROOT / "deploy" / "nginx" / "agentserve-proxy.conf"


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    return {m["kind"]: m for m in kuberay.render_manifests(PRODUCTION)}


def groups(service: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = service["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]


def changed(obj: dict[str, Any], path: tuple[str | int, ...], value: object) -> dict[str, Any]:
    """A deep copy of ``obj`` with ``path`` set to ``value`` (deleted when ``value`` is ``...``)."""
    out = copy.deepcopy(obj)
    node: Any = out
    for key in path[:-1]:
        node = node[key]
    if value is ...:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


def test_the_pinned_kubernetes_version_is_the_newest_bundled() -> None:
    # Bumping kubernetes-validate brings newer schemas: move KUBERNETES_VERSION with it.
    assert kubernetes_validate.latest_version() == kuberay.KUBERNETES_VERSION


@pytest.mark.parametrize("kind", ["Namespace", "Secret", "Ingress"])
def test_core_kinds_pass_kubernetes_schema(manifests: dict[str, dict[str, Any]], kind: str) -> None:
    assert kubernetes_validate.validate(manifests[kind], kuberay.KUBERNETES_VERSION, strict=True)
    kuberay.validate_object(manifests[kind])


@pytest.mark.parametrize(
    ("kind", "path", "value", "where"),
    [
        ("Ingress", ("spec", "rules", 0, "http", "paths", 0, "pathType"), ..., "pathType"),  # required
        ("Ingress", ("spec", "ingressClass"), "nginx", "ingressClass"),  # unknown field: strict
        ("Ingress", ("metadata", "annotations", "nginx.ingress.kubernetes.io/proxy-read-timeout"), 660, "660"),
        ("Secret", ("stringData", "JWT_SECRET"), 32, "JWT_SECRET"),
        ("Namespace", ("metadata", "labels"), ["agentserve"], "labels"),
    ],
)
def test_a_broken_core_object_is_refused_naming_the_field(
    manifests: dict[str, dict[str, Any]], kind: str, path: tuple[str | int, ...], value: object, where: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(where)):
        kuberay.validate_object(changed(manifests[kind], path, value))


def test_kinds_without_a_schema_are_refused_not_skipped(manifests: dict[str, dict[str, Any]]) -> None:
    with pytest.raises(ValueError, match="no schema"):
        kuberay.validate_object({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor"})
    with pytest.raises(ValueError, match="ConfigMapp"):
        kuberay.validate_object({"apiVersion": "v1", "kind": "ConfigMapp", "metadata": {"name": "x"}})


def test_the_rayservice_cluster_passes_the_raycluster_crd(manifests: dict[str, dict[str, Any]]) -> None:
    spec = manifests["RayService"]["spec"]["rayClusterConfig"]
    cluster = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "agentserve-x"}, "spec": spec}
    kuberay.validate_against_crd(cluster)  # found by kind: ray.io_rayclusters.yaml
    with pytest.raises(ValueError, match=r"RayCluster refused by the CRD schema:\n  spec.enableInTreeAutoscaling"):
        kuberay.validate_against_crd(changed(cluster, ("spec", "enableInTreeAutoscaling"), "yes"))
    with pytest.raises(ValueError, match=r"is not ray\.io/v1/RayCluster"):
        kuberay.validate_against_crd(
            {**cluster, "kind": "RayService"}, str(kuberay.find_crd("ray.io_rayclusters.yaml"))
        )


def test_the_cluster_scales_itself_and_sizes_every_pod(manifests: dict[str, dict[str, Any]]) -> None:
    cluster = manifests["RayService"]["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True and cluster["autoscalerOptions"]["idleTimeoutSeconds"] > 0
    (workers,) = cluster["workerGroupSpecs"]
    assert 0 < workers["minReplicas"] <= workers["replicas"] < workers["maxReplicas"]
    for group in groups(manifests["RayService"]):
        for c in group["template"]["spec"]["containers"]:
            assert set(c["resources"]["limits"]) == {"cpu", "memory"}


def test_the_ingress_routes_to_kuberays_serve_service_without_buffering(
    manifests: dict[str, dict[str, Any]],
) -> None:
    ingress, service = manifests["Ingress"], manifests["RayService"]
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    # KubeRay names the Service it keeps pointed at the serving cluster <RayService name>-serve-svc.
    assert path["backend"]["service"] == {
        "name": f"{service['metadata']['name']}-serve-svc",
        "port": {"number": load_serve_config(PRODUCTION)["http_options"]["port"]},
    }
    assert (path["path"], path["pathType"]) == ("/", "Prefix") and "host" not in rule and "tls" not in ingress["spec"]
    notes = {k.removeprefix("nginx.ingress.kubernetes.io/"): v for k, v in ingress["metadata"]["annotations"].items()}
    assert notes["proxy-buffering"] == notes["proxy-request-buffering"] == "off"


def test_ingress_timeouts_outlast_the_serve_proxy_like_the_nginx_config(manifests: dict[str, dict[str, Any]]) -> None:
    notes = manifests["Ingress"]["metadata"]["annotations"]
    request_timeout_s = load_serve_config(PRODUCTION)["http_options"]["request_timeout_s"]
    nginx = dict(re.findall(r"^(proxy_\w+_timeout) (\d+)s;", NGINX.read_text(), re.M))
    for which in ("read", "send"):
        ingress_s = int(notes[f"nginx.ingress.kubernetes.io/proxy-{which}-timeout"])
        # The app's own timeout answers first, with its JSON error body; a long stream is never cut by the edge.
        assert ingress_s > request_timeout_s and ingress_s == int(nginx[f"proxy_{which}_timeout"])


def test_a_host_gets_a_rule_and_tls() -> None:
    ingress = kuberay.render_manifests(PRODUCTION, host="agents.example.com", ingress_class="internal")[3]
    assert ingress["spec"]["ingressClassName"] == "internal"
    assert ingress["spec"]["rules"][0]["host"] == "agents.example.com"
    assert ingress["spec"]["tls"] == [{"hosts": ["agents.example.com"], "secretName": "agentserve-tls"}]
    kuberay.validate_object(ingress)


def test_the_podmonitor_scrapes_every_ray_pod_on_named_ports(manifests: dict[str, dict[str, Any]]) -> None:
    monitor, service = manifests["PodMonitor"], manifests["RayService"]
    kuberay.validate_object(monitor)
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    selector = monitor["spec"]["selector"]["matchLabels"].items()
    endpoints = {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]}
    head_ports: set[str] = set()
    for group in groups(service):
        template = group["template"]
        assert selector <= template["metadata"]["labels"].items()  # the selector matches head and worker pods
        ports = {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c["ports"]}
        assert ports["metrics"] == int(group["rayStartParams"]["metrics-export-port"])
        head_ports = head_ports or set(ports)
    assert endpoints <= head_ports and "metrics" in endpoints
    # Ray's Grafana dashboards filter on ray_io_cluster.
    relabel = monitor["spec"]["podMetricsEndpoints"][0]["relabelings"]
    assert {"sourceLabels": ["__meta_kubernetes_pod_label_ray_io_cluster"], "targetLabel": "ray_io_cluster"} in relabel


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        (("spec", "podMetricEndpoints"), [], "podMetricEndpoints"),  # a typo of podMetricsEndpoints
        (("spec", "podMetricsEndpoints", 0, "interval"), "15 seconds", "interval"),
        (("spec", "podMetricsEndpoints", 0, "port"), ..., "port"),
        (("spec", "podMetricsEndpoints", 0, "relabelings", 0, "sourceLabels", 0), "pod.label", "sourceLabels"),
        (("spec", "selector"), ..., "selector"),
    ],
)
def test_a_broken_podmonitor_is_refused_naming_the_field(
    manifests: dict[str, dict[str, Any]], path: tuple[str | int, ...], value: object, where: str
) -> None:
    with pytest.raises(ValueError, match=where):
        kuberay.validate_object(changed(manifests["PodMonitor"], path, value))


def test_rendered_yaml_has_no_aliases() -> None:
    # A shared object would come out as &id001 / *id001, which people misread and some tools refuse.
    for name, text in kuberay.render_files(PRODUCTION).items():
        assert not re.search(r"[&*]id\d+", text), name
        assert yaml.safe_load(text) is not None
