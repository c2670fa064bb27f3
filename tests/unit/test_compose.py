"""compose.yaml: valid Compose, consistent with the Dockerfile, the Serve config, nginx and the app's settings.

No Docker engine runs here, so the file is checked against the Compose Specification's
JSON schema (shared/compose-spec/) after the same ``${VAR}`` interpolation Compose does,
with the values of .env.example. The shipped nginx configs go through ``nginx -t``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

from serve_app.auth.config import AuthSettings, is_placeholder
from serve_app.config_file import load_serve_config
from serve_app.settings import Settings
from tests.support.nginx import NGINX_DIR, localize, nginx_binary

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
PRODUCTION = ROOT / "configs" / "production.yaml"
APP = "agentserve"
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}; $$ is a literal $.
VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|API_KEY|TOKEN|PRIVATE", re.I)


def compose_spec_schema() -> dict[str, Any]:
    """The schema from shared/compose-spec/, beside the checkout (or COMPOSE_SPEC_DIR)."""
    dirs = [Path(d) for d in [os.environ.get("COMPOSE_SPEC_DIR")] if d]
    dirs += [p / "shared" / "compose-spec" for p in ROOT.parents]
    for d in dirs:
        if (d / "compose-spec.json").is_file():
            return dict(json.loads((d / "compose-spec.json").read_text()))
    pytest.fail("compose-spec.json not found: keep shared/ beside the checkout or set COMPOSE_SPEC_DIR", pytrace=False)


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as Compose reads a .env file (comments and blank lines skipped)."""
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE: {line!r}"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def interpolate(node: Any, env: dict[str, str]) -> Any:
    """Compose's interpolation of every string in the file; an unset required variable fails."""
    if isinstance(node, dict):
        return {k: interpolate(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, env) for v in node]
    if not isinstance(node, str):
        return node

    def one(m: re.Match[str]) -> str:
        name, op, arg = m["name"], m["op"], m["arg"] or ""
        value = env.get(name)
        if op in (":?", "?") and (value is None or (op == ":?" and value == "")):
            pytest.fail(f"compose needs {name}: {arg}")
        if (op == ":-" and not value) or (op == "-" and value is None):
            return arg
        if value is None:
            pytest.fail(f"${{{name}}} has no value and no default")
        return value

    placeholder = "\0dollar\0"
    return VAR.sub(one, node.replace("$$", placeholder)).replace(placeholder, "$")


def variables_used(text: str) -> set[str]:
    return {m["name"] for m in VAR.finditer(text.replace("$$", ""))}


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


@pytest.fixture(scope="module")
def example_env() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any], example_env: dict[str, str]) -> dict[str, Any]:
    return dict(interpolate(raw, example_env))


def app_env(compose: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in compose["services"][APP]["environment"].items()}


def test_compose_file_is_valid_compose(compose: dict[str, Any]) -> None:
    validator = jsonschema.Draft7Validator(compose_spec_schema())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, "\n".join(errors)
    # The check bites: a misspelt key is refused.
    broken = json.loads(json.dumps(compose))
    broken["services"]["nginx"]["port"] = ["80:80"]
    assert not validator.is_valid(broken)


def test_every_variable_is_in_env_example_and_used(raw: dict[str, Any], example_env: dict[str, str]) -> None:
    used = variables_used(COMPOSE.read_text())
    assert used, "compose.yaml takes nothing from .env?"
    assert sorted(used - set(example_env)) == [], "variables compose.yaml uses that .env.example lacks"
    assert sorted(set(example_env) - used) == [], ".env.example variables compose.yaml never uses"


def test_env_example_holds_placeholders_and_env_is_never_committed(example_env: dict[str, str]) -> None:
    secret_keys = [k for k in example_env if SECRET_NAME.search(k)]
    assert {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "JWT_SECRET", "LLM_API_KEY"} <= set(secret_keys)
    for key in secret_keys:
        assert is_placeholder(example_env[key]), f"{key} in .env.example must be a placeholder"
    for host_url in ("LLM_BASE_URL",):
        assert (urlsplit(example_env[host_url]).hostname or "").endswith(".invalid")
    gitignore = (ROOT / ".gitignore").read_text().splitlines()
    assert ".env" in gitignore or "/.env" in gitignore
    dockerignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ".env" in dockerignore


def test_no_secret_value_is_inline(raw: dict[str, Any]) -> None:
    for name, service in raw["services"].items():
        for key, value in (service.get("environment") or {}).items():
            value = str(value)
            if SECRET_NAME.search(key):
                assert VAR.fullmatch(value), f"{name}.{key} must come from .env, as ${{{key}}}"
            if "://" in value and "@" in value:
                userinfo = value.split("://", 1)[1].rsplit("@", 1)[0]
                assert VAR.sub("", userinfo).strip(":") == "", f"{name}.{key}: credentials must come from .env"
        for arg in (service.get("build") or {}).get("args", {}):
            assert not SECRET_NAME.search(arg), f"build arg {arg} would bake a secret into the image"


def test_the_app_settings_accept_the_compose_environment(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = app_env(compose)
    assert env["AGENTSERVE_ENV"] == "production" and env["AUTH_MODE"] == "required"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # The placeholders of .env.example do not start: a forgotten JWT_SECRET fails loudly.
    with pytest.raises(ValidationError, match="placeholder"):
        AuthSettings(_env_file=None)  # type: ignore[call-arg]
    monkeypatch.setenv("JWT_SECRET", secrets.token_hex(32))
    auth = AuthSettings(_env_file=None)  # type: ignore[call-arg]
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert not auth.disabled
    assert settings.agentserve_env == "production"
    # LanceDB on the app's named volume, not in the container's writable layer.
    volume_paths = [v.split(":")[1] for v in compose["services"][APP]["volumes"]]
    assert any(str(settings.lancedb_uri).startswith(p + "/") for p in volume_paths)


def test_services_named_by_the_app_urls_are_defined_healthy_and_reachable(compose: dict[str, Any]) -> None:
    services = compose["services"]
    env = app_env(compose)
    app_networks = set(services[APP]["networks"])
    for url_var, scheme in [("DATABASE_URL", "postgresql"), ("REDIS_URL", "redis")]:
        url = urlsplit(env[url_var])
        assert url.scheme == scheme and url.hostname in services, f"{url_var} names no service: {url.hostname}"
        peer = services[url.hostname]
        assert app_networks & set(peer["networks"]), f"{url.hostname} shares no network with {APP}"
        assert "test" in peer["healthcheck"]
        assert services[APP]["depends_on"][url.hostname]["condition"] == "service_healthy"
        named = [v.split(":")[0] for v in peer["volumes"] if not v.startswith((".", "/", "$"))]
        assert named and set(named) <= set(compose["volumes"]), f"{url.hostname} keeps no named volume"
    # The PostgreSQL URL is built from the credentials the postgres service is created with.
    pg = services["postgres"]["environment"]
    db = urlsplit(env["DATABASE_URL"])
    assert (db.username, db.password, db.path.lstrip("/")) == (
        pg["POSTGRES_USER"],
        pg["POSTGRES_PASSWORD"],
        pg["POSTGRES_DB"],
    )
    assert urlsplit(env["REDIS_URL"]).password == services["redis"]["environment"]["REDIS_PASSWORD"]


def test_image_and_command_agree_with_the_dockerfile(compose: dict[str, Any]) -> None:
    app = compose["services"][APP]
    build = app["build"]
    dockerfile = ROOT / build["context"] / build.get("dockerfile", "Dockerfile")
    assert dockerfile.resolve() == (ROOT / "Dockerfile").resolve()
    text = dockerfile.read_text()
    assert set(build.get("args", {})) <= set(re.findall(r"^ARG (\w+)", text, re.M))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # The tag KubeRay's manifest names too (tests/unit/test_kuberay.py).
    assert app["image"] == f"agentserve:{project['version']}"
    command = app["command"]
    assert command[0] in project["scripts"] and command[1] == "run"
    config = command[command.index("--config") + 1]
    assert (ROOT / config).resolve() == PRODUCTION.resolve()
    assert re.search(r"^COPY .*\bconfigs\b", text, re.M), "the image lacks configs/"


def test_docker_stop_lets_in_flight_streams_finish(compose: dict[str, Any]) -> None:
    app = compose["services"][APP]
    command = app["command"]
    stop_timeout = float(command[command.index("--stop-timeout") + 1])
    app_config = next(a for a in load_serve_config(PRODUCTION)["applications"] if a["name"] == "agentserve")
    graceful = max(d.get("graceful_shutdown_timeout_s", 20) for d in app_config["deployments"])
    assert stop_timeout >= graceful, "agentserve run would cut streams the deployments let finish"
    grace = app["stop_grace_period"]
    assert grace.endswith("s") and float(grace[:-1]) >= stop_timeout + 20, "docker would kill Ray mid-stop"


def test_the_app_port_agrees_with_the_serve_config(compose: dict[str, Any]) -> None:
    port = load_serve_config(PRODUCTION)["http_options"]["port"]
    app = compose["services"][APP]
    assert [str(p) for p in app["expose"]] == [str(port)]
    assert f"127.0.0.1:{port}/live" in " ".join(app["healthcheck"]["test"])
    conf = (NGINX_DIR / "compose.conf").read_text()
    assert re.findall(r"^\s*server\s+(\S+);", conf, re.M) == [f"{APP}:{port}"]


def test_only_nginx_publishes_ports(compose: dict[str, Any]) -> None:
    published = {name: s["ports"] for name, s in compose["services"].items() if s.get("ports")}
    assert list(published) == ["nginx"]
    assert sorted(str(p) for p in published["nginx"]) == ["443:443", "80:80"]
    # PostgreSQL and Redis sit on an internal network only: no way in from the host, none out.
    for name in ("postgres", "redis"):
        assert all(compose["networks"][n].get("internal") for n in compose["services"][name]["networks"])


def test_nginx_mounts_exist_and_the_conf_includes_the_mounted_snippet(compose: dict[str, Any]) -> None:
    mounts = {}  # target in the container -> source on the host
    for volume in compose["services"]["nginx"]["volumes"]:
        source, target, *_mode = volume.split(":")
        mounts[target] = source
        if source.startswith("./"):
            assert (ROOT / source).is_file(), f"nginx mounts {source}, which does not exist"
    conf = (ROOT / mounts["/etc/nginx/conf.d/default.conf"]).read_text()
    includes = re.findall(r"^\s*include\s+(\S+);", conf, re.M)
    assert includes and all(i in mounts for i in includes), f"the conf includes files nginx does not get: {includes}"
    assert mounts["/etc/nginx/snippets/agentserve-proxy.conf"] == "./deploy/nginx/agentserve-proxy.conf"
    assert "/etc/nginx/certs" in mounts
    for name in ("ssl_certificate", "ssl_certificate_key"):
        path = re.search(rf"^\s*{name}\s+(\S+);", conf, re.M)
        assert path and path[1].startswith("/etc/nginx/certs/"), f"{name} is outside the mounted TLS_CERT_DIR"


def nginx_duration_s(text: str, directive: str) -> float:
    m = re.search(rf"^\s*{directive}\s+(\d+)(s|m)?;", text, re.M)
    assert m, f"{directive} not set"
    return float(m[1]) * (60 if m[2] == "m" else 1)


def test_the_proxy_waits_longer_than_the_serve_request_timeout() -> None:
    snippet = (NGINX_DIR / "agentserve-proxy.conf").read_text()
    read_timeout = nginx_duration_s(snippet, "proxy_read_timeout")
    for config in sorted((ROOT / "configs").glob("*.yaml")):
        request_timeout = load_serve_config(config)["http_options"]["request_timeout_s"]
        assert read_timeout > request_timeout, f"nginx would cut a turn before {config.name}'s own timeout answers"
    for directive in ("proxy_buffering off", "proxy_http_version 1.1", "gzip off"):
        assert re.search(rf"^{directive};", snippet, re.M), directive
    assert not re.search(r"^\s*proxy_ignore_headers", snippet, re.M), "X-Accel-Buffering must stay honoured"


def nginx_test(conf: str, tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir(exist_ok=True)
    path = tmp_path / "nginx.conf"
    path.write_text(conf)
    r = subprocess.run([nginx_binary(), "-t", "-p", str(tmp_path), "-c", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_the_compose_nginx_conf_passes_nginx_t(tmp_path: Path) -> None:
    conf = localize((NGINX_DIR / "compose.conf").read_text(), tmp_path)
    # Outside compose the service name `agentserve` does not resolve; the Serve port stays.
    conf = re.sub(r"server agentserve:(\d+);", r"server 127.0.0.1:\1;", conf)
    nginx_test(f"events {{}}\nhttp {{\n{conf}\n}}\n", tmp_path)


def test_the_example_nginx_conf_passes_nginx_t(tmp_path: Path) -> None:
    text = (NGINX_DIR / "nginx.conf").read_text()
    assert "include /etc/nginx/snippets/agentserve-proxy.conf;" in text
    conf = localize(text, tmp_path)
    if not Path("/etc/nginx/mime.types").exists():
        pytest.fail("/etc/nginx/mime.types is missing: install nginx-light", pytrace=False)
    # `user` needs root to mean anything; nginx -t only warns about it otherwise.
    nginx_test(conf, tmp_path)
