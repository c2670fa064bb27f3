"""KubeRay manifests: rendered from configs/production.yaml, checked against the real RayService CRD, no cluster."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
import tomllib
import typing
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import SecretStr, ValidationError

from serve_app import kuberay
from serve_app.auth.config import AuthSettings
from serve_app.config_file import load_serve_config, validate_serve_config
from serve_app.serve_switches import SERVE_FAST_PATH
from serve_app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ROOT / "configs" / "production.yaml"
COMMITTED = ROOT / "kuberay"


@pytest.fixture(scope="module")
def crd() -> str:
    try:
        return str(kuberay.find_crd())
    except FileNotFoundError as exc:
        pytest.fail(f"{exc}: keep shared/ beside the checkout or set KUBERAY_CRD_DIR", pytrace=False)


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict]:
    return {m["kind"]: m for m in kuberay.render_manifests(PRODUCTION)}


def values_of(node: object, key: str) -> list[object]:
    """Every value of ``key`` in a nested structure."""
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == key] + [x for v in node.values() for x in values_of(v, key)]
    if isinstance(node, list):
        return [x for v in node for x in values_of(v, key)]
    return []


def containers(service: dict) -> list[dict]:
    cluster = service["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def test_committed_manifests_equal_a_fresh_render() -> None:
    fresh = kuberay.render_files(PRODUCTION)
    assert set(fresh) == set(kuberay.FILES.values())
    # Every manifest in kuberay/ is rendered: none is hand-written, none is left over from an older render.
    assert {p.name for p in COMMITTED.glob("*.y*ml")} == set(fresh)
    for name, text in fresh.items():
        assert (COMMITTED / name).read_text() == text, (
            f"kuberay/{name} is stale: python -m serve_app.kuberay render --config configs/production.yaml --out kuberay/"
        )


def test_committed_rayservice_validates_against_the_crd(crd: str) -> None:
    service = yaml.safe_load((COMMITTED / "rayservice.yaml").read_text())
    kuberay.validate_against_crd(service, crd)
    kuberay.validate_manifest(service, crd)


def test_serve_config_v2_is_the_production_config(manifests: dict[str, dict]) -> None:
    text = manifests["RayService"]["spec"]["serveConfigV2"]
    assert isinstance(text, str)
    config = yaml.safe_load(text)
    assert config == load_serve_config(PRODUCTION)
    validate_serve_config(config)


def test_production_config_is_external_llm_and_authenticated(manifests: dict[str, dict]) -> None:
    config = load_serve_config(PRODUCTION)
    assert [a["name"] for a in config["applications"]] == ["agentserve"]
    assert kuberay.production_problems(config) == []
    # Anywhere in the config (app or deployment runtime_env), these would override the pods' env.
    assert all(str(v).lower() != "disabled" for v in values_of(config, "AUTH_MODE"))
    assert all(v == "production" for v in values_of(config, "AGENTSERVE_ENV"))
    for c in containers(manifests["RayService"]):
        env = {e["name"]: e["value"] for e in c["env"]}
        # `env` wins over `envFrom`: the Secret cannot switch authentication off.
        assert env["AUTH_MODE"] == "required" and env["AGENTSERVE_ENV"] == "production"
        assert env["RAY_USAGE_STATS_ENABLED"] == "0"
        # Ray starts with Serve's fast path on every pod, as `agentserve run` does locally.
        assert {k: env[k] for k in SERVE_FAST_PATH} == SERVE_FAST_PATH
        assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
        assert "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S" not in env  # Ray's 30 s (rollouts lose none)
        assert c["envFrom"] == [{"secretRef": {"name": manifests["Secret"]["metadata"]["name"]}}]


def test_deployments_are_sized_for_production() -> None:
    app = load_serve_config(PRODUCTION)["applications"][0]
    deps = {d["name"]: d for d in app["deployments"]}
    assert set(deps) == {"Ingress", "Agent", "ToolExecutor", "Embedding"}
    for d in deps.values():
        assert d["max_ongoing_requests"] > 5 and d["autoscaling_config"]["min_replicas"] >= 2
    for name in ("Ingress", "Agent"):
        assert deps[name]["graceful_shutdown_timeout_s"] >= 120
    assert deps["Embedding"]["ray_actor_options"]["memory"] >= 1 << 30
    assert set(deps["Ingress"]["user_config"]["rate_limit"]) == {
        "enabled", "requests_per_minute", "ip_requests_per_minute", "tokens_per_minute", "fail_open",
    }  # fmt: skip


def secret_settings() -> set[str]:
    """Environment variables that the settings read as secrets (a SecretStr field)."""
    names = set()
    for model in (Settings, AuthSettings):
        for field, info in model.model_fields.items():
            if info.annotation is SecretStr or SecretStr in typing.get_args(info.annotation):
                names.add(field.upper())
    return names


def test_secret_template_holds_every_secret_and_no_real_one(manifests: dict[str, dict]) -> None:
    data = manifests["Secret"]["stringData"]
    assert {"LLM_API_KEY", "DATABASE_URL", "REDIS_URL", "JWT_SECRET"} <= secret_settings() <= set(data)
    for name, value in data.items():
        assert not re.search(r"[A-Za-z0-9+=_-]{20,}|\bsk-", value), f"{name} looks like a real secret"
        host = urlsplit(value).hostname if "://" in value else None
        assert host is None or host.endswith(".invalid") or host == "change-me", f"{name}: a real host"
    for name in secret_settings():
        assert "change-me" in data[name], f"{name} is not an obvious placeholder"
    # A forgotten placeholder stops the Ingress instead of signing tokens with a public secret.
    with pytest.raises(ValidationError, match="placeholder"):
        AuthSettings(_env_file=None, agentserve_env="production", auth_mode="required", jwt_secret=data["JWT_SECRET"])  # type: ignore[call-arg]


def test_image_and_ray_version_match_the_dockerfile(manifests: dict[str, dict]) -> None:
    base = re.search(r"^FROM rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)\s*$", (ROOT / "Dockerfile").read_text(), re.M)
    assert base, "the Dockerfile's FROM is not rayproject/ray:<version>-py<python>"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert manifests["RayService"]["spec"]["rayClusterConfig"]["rayVersion"] == kuberay.RAY_VERSION == base[1]
    assert f"ray[serve]=={base[1]}" in project["dependencies"]
    assert f">={base[2]}.{base[3]}" in project["requires-python"]
    # The image built from this commit is the one the manifest names.
    assert {c["image"] for c in containers(manifests["RayService"])} == {f"agentserve:{project['version']}"}


def test_pods_keep_kuberays_probes_and_name_their_ports(manifests: dict[str, dict]) -> None:
    for c in containers(manifests["RayService"]):
        # KubeRay injects probes only when none is set; its worker readiness probe also checks the
        # Serve proxy (/-/healthz on the port named "serve"), which a custom probe would drop.
        assert "readinessProbe" not in c and "livenessProbe" not in c
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["serve"] == 8000 and ports["metrics"] == 8080
        assert c["resources"]["requests"] == c["resources"]["limits"]
    head = manifests["RayService"]["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"


BROKEN = [
    (("spec", "rayClusterConfig", "workerGroupSpecs", 0, "maxReplicas"), "eight", "maxReplicas"),
    (("spec", "rayClusterConfig", "headGroupSpec", "rayStartParams", "num-cpus"), 0, "num-cpus"),
    (("spec", "rayClusterConfig", "authOptions", "mode"), "tokens", "mode"),
    (("spec", "rayClusterConfig", "headGroupSpec", "replicas"), 1, "replicas"),  # an unknown field
    (("spec", "serveConfigV2"), {"applications": []}, "serveConfigV2"),  # a mapping, not YAML text
    (("spec", "rayClusterConfig", "workerGroupSpecs", 0, "groupName"), None, "groupName"),  # required
]


@pytest.mark.parametrize(("path", "value", "where"), BROKEN)
def test_a_broken_rayservice_is_refused_naming_the_field(
    crd: str, manifests: dict[str, dict], path: tuple, value: object, where: str
) -> None:
    service = copy.deepcopy(manifests["RayService"])
    node = service
    for key in path[:-1]:
        node = node[key]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    with pytest.raises(ValueError, match=where):
        kuberay.validate_against_crd(service, crd)


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        (("spec", "upgradeStrategy", "type"), "BlueGreen", "upgradeStrategy"),
        (("metadata", "name"), "a" * 48, "metadata.name"),
        (("spec", "rayClusterConfig", "workerGroupSpecs", 0, "minReplicas"), 9, "minReplicas"),
    ],
)
def test_what_the_operator_refuses_is_refused(
    crd: str, manifests: dict[str, dict], path: tuple, value: object, where: str
) -> None:
    service = copy.deepcopy(manifests["RayService"])
    node = service
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    kuberay.validate_against_crd(service, crd)  # the schema alone lets these through
    with pytest.raises(ValueError, match=where):
        kuberay.validate_manifest(service, crd)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda c: c["applications"].append({"name": "local-llm", "import_path": "x:y"}), "local-llm"),
        (lambda c: c["applications"][0].update(runtime_env={"env_vars": {"AUTH_MODE": "disabled"}}), "AUTH_MODE"),
        (lambda c: c["applications"][0].update(runtime_env={"env_vars": {"LLM_API_KEY": "k"}}), "LLM_API_KEY"),
        (
            lambda c: c["applications"][0]["deployments"][0]["ray_actor_options"].update(
                runtime_env={"env_vars": {"AGENTSERVE_ENV": "development"}}
            ),
            "AGENTSERVE_ENV",
        ),
        (lambda c: c["http_options"].update(host="127.0.0.1"), "0.0.0.0"),
    ],
)
def test_production_problems_are_caught(change: typing.Callable[[dict], None], problem: str) -> None:
    config = load_serve_config(PRODUCTION)
    change(config)
    assert any(problem in p for p in kuberay.production_problems(config))


def test_render_refuses_workers_too_small_for_the_replicas() -> None:
    with pytest.raises(ValueError, match="need"):
        kuberay.render_rayservice(PRODUCTION, worker_max=2)
    with pytest.raises(ValueError, match="Embedding"):
        kuberay.render_rayservice(PRODUCTION, worker_cpu="1", worker_max=100)
    with pytest.raises(ValueError, match="local-llm"):
        kuberay.render_rayservice(ROOT / "configs" / "local.yaml")


def test_cli_renders_and_validates_every_file(tmp_path: Path, crd: str, capsys: pytest.CaptureFixture) -> None:
    assert kuberay.main(["render", "--config", str(PRODUCTION), "--out", str(tmp_path)]) == 0
    files = sorted(str(p) for p in tmp_path.glob("*.yaml"))
    assert len(files) == len(kuberay.FILES) and kuberay.main(["validate", *files]) == 0
    assert capsys.readouterr().out.count(": ok\n") == len(kuberay.FILES)
    broken = tmp_path / "rayservice.yaml"
    broken.write_text(broken.read_text().replace("maxReplicas: 8", "maxReplicas: eight"))
    assert kuberay.main(["validate", str(broken)]) == 1
    assert "maxReplicas" in capsys.readouterr().err


def test_importing_the_package_imports_neither_ray_nor_kubernetes() -> None:
    # `agentserve` imports it for every command: the kubernetes client loads only for apply/status/delete.
    code = "import sys, serve_app.kuberay; sys.exit('ray' in sys.modules or 'kubernetes' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False).returncode == 0


def test_cli_with_a_config_or_file_it_cannot_use_says_so_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    assert kuberay.main(["render", "--config", str(tmp_path / "missing.yaml"), "--out", str(out)]) == 2
    assert f"nothing written: {tmp_path / 'missing.yaml'}: no such file" in capsys.readouterr().err
    local = ROOT / "configs" / "local.yaml"  # the local model: unfit for production
    assert kuberay.main(["render", "--config", str(local), "--out", str(out)]) == 2
    assert "local-llm" in capsys.readouterr().err and not out.exists()
    empty = tmp_path / "empty.yaml"
    empty.write_text("just text\n")
    assert kuberay.main(["validate", str(empty)]) == 1  # before: nothing said, exit 0
    assert f"{empty}: no Kubernetes objects in it" in capsys.readouterr().err
