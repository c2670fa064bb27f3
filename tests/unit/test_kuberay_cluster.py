"""`agentserve kuberay apply|status|delete` with the real `kubernetes` client, against a recording API server.

No Kubernetes runs here: a stdlib HTTP server on 127.0.0.1 records each request (method, path, headers,
JSON body) and answers what the test scripts, as an API server would (Status bodies on errors).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient, Configuration

from serve_app import kuberay
from serve_app.kuberay import cluster

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ROOT / "configs" / "production.yaml"
TOKEN = "t0ken-that-must-not-leak"
RS = "/apis/ray.io/v1/namespaces/agentserve/rayservices"
APPLY_QUERY = "fieldManager=agentserve"


class FakeApiServer(ThreadingHTTPServer):
    """Records requests; answers ``replies[(method, path)]`` (status, body), else echoes the body with 200."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict[str, Any]] = []
        self.replies: dict[tuple[str, str], tuple[int, Any]] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeApiServer

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        body = json.loads(raw) if raw else None
        self.server.requests.append(
            {
                "method": self.command,
                "path": path,
                "query": query,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
            }
        )
        status, reply = self.server.replies.get((self.command, path), (200, body or {}))
        if status >= 400 and isinstance(reply, str):
            reply = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": reply, "code": status}
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def log_message(self, *args: object) -> None:  # keep pytest's output clean
        pass


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    srv = FakeApiServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def kubeconfig(server: FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real kubeconfig with two contexts; only ``fake`` reaches the server."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "fake", "cluster": {"server": server.url}},
            {"name": "elsewhere", "cluster": {"server": "http://127.0.0.1:9"}},
        ],
        "users": [{"name": "me", "user": {"token": TOKEN}}],
        "contexts": [
            {"name": "fake", "context": {"cluster": "fake", "user": "me"}},
            {"name": "other", "context": {"cluster": "elsewhere", "user": "me"}},
        ],
        "current-context": "other",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


@pytest.fixture
def rendered(tmp_path: Path) -> Path:
    out = tmp_path / "kuberay"
    assert kuberay.main(["render", "--config", str(PRODUCTION), "--out", str(out)]) == 0
    return out


def manifests() -> dict[str, dict[str, Any]]:
    return {m["kind"]: m for m in kuberay.render_manifests(PRODUCTION)}


def secret_exists(server: FakeApiServer) -> None:
    meta = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": {"name": "agentserve-secrets"}}
    server.replies[("GET", "/api/v1/namespaces/agentserve/secrets/agentserve-secrets")] = (200, meta)


def test_apply_server_side_applies_each_manifest_as_rendered(
    server: FakeApiServer, kubeconfig: Path, rendered: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret_exists(server)
    server.replies[("PATCH", f"{RS}/agentserve")] = (201, manifests()["RayService"])
    assert kuberay.main(["apply", "--dir", str(rendered), "--context", "fake"]) == 0

    sent = [(r["method"], r["path"]) for r in server.requests]
    assert sent == [
        ("PATCH", "/api/v1/namespaces/agentserve"),
        ("GET", "/api/v1/namespaces/agentserve/secrets/agentserve-secrets"),
        ("PATCH", f"{RS}/agentserve"),
        ("PATCH", "/apis/networking.k8s.io/v1/namespaces/agentserve/ingresses/agentserve"),
        ("PATCH", "/apis/monitoring.coreos.com/v1/namespaces/agentserve/podmonitors/agentserve-ray"),
    ]
    expected = manifests()
    for request in server.requests:
        assert request["headers"]["authorization"] == f"Bearer {TOKEN}"
        if request["method"] == "PATCH":
            # Server-side apply: the manifest itself is the patch, owned by our field manager.
            assert request["headers"]["content-type"] == "application/apply-patch+yaml"
            assert request["query"] == APPLY_QUERY
            assert request["body"] == expected[request["body"]["kind"]]
    # The Secret's values never leave the API server, and the template is never sent.
    secret_get = server.requests[1]
    assert secret_get["headers"]["accept"].startswith("application/json;as=PartialObjectMetadata")
    assert all((r["body"] or {}).get("kind") != "Secret" for r in server.requests)
    out = capsys.readouterr()
    assert "rayservice/agentserve created" in out.out and "ingress/agentserve configured" in out.out
    assert TOKEN not in out.out + out.err


def test_apply_uses_the_current_context_without_flag(kubeconfig: Path, rendered: Path) -> None:
    # current-context "other" points at a closed port: the request fails there, not at our server.
    config = yaml.safe_load(kubeconfig.read_text())
    config["current-context"] = "fake"
    kubeconfig.write_text(yaml.safe_dump(config))
    api = cluster.load_client()
    assert api.configuration.host == config["clusters"][0]["cluster"]["server"]
    assert cluster.load_client("other").configuration.host == "http://127.0.0.1:9"


def test_a_conflict_is_reported_and_force_conflicts_takes_the_fields_over(
    server: FakeApiServer, kubeconfig: Path, rendered: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret_exists(server)
    conflict = 'Apply failed with 1 conflict: conflict with "kubectl-edit": .spec.rayClusterDeletionDelaySeconds'
    server.replies[("PATCH", f"{RS}/agentserve")] = (409, conflict)
    assert kuberay.main(["apply", "--dir", str(rendered), "--context", "fake"]) == 1
    err = capsys.readouterr().err
    assert conflict in err and "--force-conflicts" in err
    assert server.requests[-1]["path"] == f"{RS}/agentserve"  # stopped there: no Ingress, no PodMonitor

    server.requests.clear()
    del server.replies[("PATCH", f"{RS}/agentserve")]
    assert kuberay.main(["apply", "--dir", str(rendered), "--context", "fake", "--force-conflicts"]) == 0
    patches = [r for r in server.requests if r["method"] == "PATCH"]
    assert len(patches) == 4 and all(r["query"] == f"{APPLY_QUERY}&force=true" for r in patches)


def test_dry_run_asks_the_server_to_persist_nothing(
    server: FakeApiServer, kubeconfig: Path, rendered: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.replies[("GET", "/api/v1/namespaces/agentserve/secrets/agentserve-secrets")] = (404, "not found")
    assert kuberay.main(["apply", "--dir", str(rendered), "--context", "fake", "--dry-run"]) == 0
    patches = [r for r in server.requests if r["method"] == "PATCH"]
    assert len(patches) == 4 and all(r["query"] == f"dryRun=All&{APPLY_QUERY}" for r in patches)
    assert "warning: secret/agentserve-secrets does not exist" in capsys.readouterr().err  # a warning only


def test_apply_stops_before_the_rayservice_without_its_secret(
    server: FakeApiServer, kubeconfig: Path, rendered: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.replies[("GET", "/api/v1/namespaces/agentserve/secrets/agentserve-secrets")] = (404, "not found")
    assert kuberay.main(["apply", "--dir", str(rendered), "--context", "fake"]) == 1
    assert [r["method"] for r in server.requests] == ["PATCH", "GET"]  # the Namespace, then the Secret check
    assert "secret.example.yaml" in capsys.readouterr().err


def test_missing_operators_are_named(
    server: FakeApiServer, kubeconfig: Path, rendered: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret_exists(server)
    no_resource = "the server could not find the requested resource"
    server.replies[("PATCH", "/apis/monitoring.coreos.com/v1/namespaces/agentserve/podmonitors/agentserve-ray")] = (
        404,
        no_resource,
    )
    assert kuberay.main(["apply", "--dir", str(rendered), "--context", "fake"]) == 0  # monitoring is optional
    assert "Prometheus Operator" in capsys.readouterr().err
    server.replies[("PATCH", f"{RS}/agentserve")] = (404, no_resource)
    assert kuberay.main(["apply", "--dir", str(rendered), "--context", "fake"]) == 1
    assert "install the KubeRay operator" in capsys.readouterr().err


def test_apply_sends_nothing_when_a_manifest_is_invalid(
    server: FakeApiServer, kubeconfig: Path, rendered: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ingress = rendered / "ingress.yaml"
    ingress.write_text(ingress.read_text().replace("pathType: Prefix", "pathType: Prefix\n        weight: 1"))
    assert kuberay.main(["apply", "--dir", str(rendered), "--context", "fake"]) == 1
    assert server.requests == [] and "weight" in capsys.readouterr().err


STATUS = {
    "apiVersion": "ray.io/v1",
    "kind": "RayService",
    "metadata": {"name": "agentserve", "namespace": "agentserve", "generation": 3},
    "status": {
        "serviceStatus": "Running",
        "numServeEndpoints": 4,
        "observedGeneration": 3,
        "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-26T13:00:00Z", "reason": "NonZeroServeEndpoints", "message": "Number of serve endpoints is greater than 0"},
            {"type": "UpgradeInProgress", "status": "False", "lastTransitionTime": "2026-11-26T13:00:00Z", "reason": "NoPendingCluster", "message": "No pending cluster exists"},
        ],
        "activeServiceStatus": {
            "rayClusterName": "agentserve-x7k2p",
            "applicationStatuses": {
                "agentserve": {
                    "status": "RUNNING",
                    "serveDeploymentStatuses": {"Ingress": {"status": "HEALTHY"}, "Agent": {"status": "UPSCALING"}},
                }
            },
        },
    },
}  # fmt: skip


def test_the_recorded_status_has_the_crds_shape() -> None:
    from jsonschema import Draft4Validator

    from serve_app.kuberay.validate import crd_schema

    _, schema = crd_schema(str(kuberay.find_crd()))
    assert list(Draft4Validator(schema["properties"]["status"]).iter_errors(STATUS["status"])) == []


def test_status_prints_conditions_and_serve_apps(
    server: FakeApiServer, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.replies[("GET", f"{RS}/agentserve")] = (200, STATUS)
    assert kuberay.main(["status", "--context", "fake"]) == 0
    assert [(r["method"], r["path"]) for r in server.requests] == [("GET", f"{RS}/agentserve")]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "rayservice agentserve/agentserve: Running, 4 serve endpoints (generation 3, observed 3)"
    assert "  Ready=True NonZeroServeEndpoints: Number of serve endpoints is greater than 0" in lines
    assert "  active cluster agentserve-x7k2p" in lines and "    app agentserve: RUNNING" in lines
    assert "      Agent: UPSCALING" in lines


def test_status_exits_2_while_not_ready_and_1_when_absent(
    server: FakeApiServer, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    starting = json.loads(json.dumps(STATUS))
    starting["status"]["conditions"][0].update(status="False", reason="Initializing")
    server.replies[("GET", "/apis/ray.io/v1/namespaces/prod/rayservices/agentserve")] = (200, starting)
    assert kuberay.main(["status", "--context", "fake", "--namespace", "prod"]) == 2
    assert "Ready=False Initializing" in capsys.readouterr().out
    missing = 'rayservices.ray.io "nope" not found'
    server.replies[("GET", f"{RS}/nope")] = (404, missing)
    assert kuberay.main(["status", "--context", "fake", "--name", "nope"]) == 1
    assert capsys.readouterr().err.strip() == f"error: rayservice agentserve/nope: {missing}"


def test_delete_deletes_what_apply_made_and_reports_a_404_cleanly(
    server: FakeApiServer, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert kuberay.main(["delete", "--context", "fake"]) == 0
    assert [(r["method"], r["path"]) for r in server.requests] == [
        ("DELETE", f"{RS}/agentserve"),
        ("DELETE", "/apis/networking.k8s.io/v1/namespaces/agentserve/ingresses/agentserve"),
        ("DELETE", "/apis/monitoring.coreos.com/v1/namespaces/agentserve/podmonitors/agentserve-ray"),
    ]
    assert "rayservice/agentserve deleted" in capsys.readouterr().out
    server.replies[("DELETE", f"{RS}/agentserve")] = (404, 'rayservices.ray.io "agentserve" not found')
    assert kuberay.main(["delete", "--context", "fake"]) == 1
    out = capsys.readouterr()
    assert "rayservice/agentserve: not found in namespace agentserve" in out.out
    assert "Traceback" not in out.err and TOKEN not in out.out + out.err


def test_no_kubeconfig_is_a_clean_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert kuberay.main(["status"]) == 1
    assert capsys.readouterr().err.startswith("error: no usable kubeconfig")


def test_an_unreachable_api_server_is_a_clean_error(kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The current context "other" points at a closed port.
    assert kuberay.main(["status"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach the API server at http://127.0.0.1:9") and "Traceback" not in err


def test_the_library_functions_take_any_configured_client(server: FakeApiServer) -> None:
    server.replies[("GET", f"{RS}/agentserve")] = (200, STATUS)
    with ApiClient(Configuration(host=server.url)) as api:
        ready, _ = cluster.describe_status(cluster.get_rayservice(api, "agentserve", "agentserve"))
    assert ready and "authorization" not in server.requests[0]["headers"]
