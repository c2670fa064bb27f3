"""KubeRay: the manifests of ``kuberay/`` rendered from a Serve config, checked offline, applied with the client.

``python -m serve_app.kuberay render --config configs/production.yaml --out kuberay/`` (or ``agentserve
kuberay render``) writes the Namespace, the Secret TEMPLATE, the RayService (``serveConfigV2`` is the
Serve config), its Ingress and PodMonitor; ``validate FILE...`` checks each against its schema (KubeRay's
CRDs, Kubernetes' own); ``apply``, ``status`` and ``delete`` talk to the cluster of the kubeconfig with
the official ``kubernetes`` client. Importing this package imports neither ray nor kubernetes.
"""

from serve_app.kuberay.cli import add_kuberay_commands, main
from serve_app.kuberay.render import (
    DEFAULT_IMAGE,
    DEFAULT_SECRET,
    FILES,
    RAY_VERSION,
    SECRET_TEMPLATE,
    production_problems,
    render_files,
    render_ingress,
    render_manifests,
    render_podmonitor,
    render_rayservice,
)
from serve_app.kuberay.validate import (
    KUBERNETES_VERSION,
    find_crd,
    validate_against_crd,
    validate_core,
    validate_manifest,
    validate_object,
    validate_podmonitor,
)

__all__ = [
    "DEFAULT_IMAGE",
    "DEFAULT_SECRET",
    "FILES",
    "KUBERNETES_VERSION",
    "RAY_VERSION",
    "SECRET_TEMPLATE",
    "add_kuberay_commands",
    "find_crd",
    "main",
    "production_problems",
    "render_files",
    "render_ingress",
    "render_manifests",
    "render_podmonitor",
    "render_rayservice",
    "validate_against_crd",
    "validate_core",
    "validate_manifest",
    "validate_object",
    "validate_podmonitor",
]
