"""``agentserve run`` and ``check-config`` with a config they cannot use: one line naming the
file and why, exit 2 (1 for check-config), nothing started, no traceback; and the default
config found from any working directory."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from serve_app.ports import free_port

AGENTSERVE = str(Path(sys.executable).with_name("agentserve"))
LOCAL = Path(__file__).resolve().parents[2] / "configs" / "local.yaml"


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something listens on: ``agentserve run`` stops there, after reading its config
    and before Ray starts."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", free_port()))
        s.listen()
        yield s.getsockname()[1]


def _agentserve(*args: str, cwd: Path | None = None, **env_vars: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "METRICS_PORT": str(free_port()), "LLM_BASE_URL": "http://127.0.0.1:9/v1", **env_vars}
    return subprocess.run([AGENTSERVE, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_the_default_config_is_found_from_another_directory(tmp_path: Path, taken_port: int) -> None:
    done = _agentserve("run", f"--port={taken_port}", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"127.0.0.1:{taken_port} (the app's; --port)" in done.stderr  # the config was read
    assert "Traceback" not in done.stderr


BAD_CONFIGS = {
    "missing": (None, "no such file (choose one with --config)"),
    "yaml": ("applications: [\n  - name: x\n", "not valid YAML"),
    "not_a_mapping": ("- just\n- a list\n", "not a Serve config"),
    "no_applications": ("http_options: {port: 8000}\n", "applications\n  Field required"),
    "bad_field": (
        LOCAL.read_text().replace("max_steps:", "max_stepz:", 1),
        "deployment 'Agent': invalid user_config",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_run_with_a_config_it_cannot_use_says_why_and_starts_nothing(tmp_path: Path, case: str) -> None:
    text, reason = BAD_CONFIGS[case]
    path = tmp_path / "config.yaml"
    if text is not None:
        path.write_text(text)
    done = _agentserve("run", "--config", str(path), f"--port={free_port()}")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith(f"agentserve run: not started: {path}: ") and reason in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "starting Ray" not in done.stdout


def test_check_config_reports_each_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- not a mapping\n")
    done = _agentserve("check-config", str(LOCAL), str(bad), str(tmp_path / "missing.yaml"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{LOCAL}: ok" in done.stdout
    assert f"{bad}: invalid: " in done.stderr and f"{tmp_path / 'missing.yaml'}: no such file\n" in done.stderr
    assert "Traceback" not in done.stderr
    assert _agentserve("check-config", str(LOCAL)).returncode == 0


def test_a_port_that_is_no_tcp_port_is_refused_naming_where_it_was_set(tmp_path: Path) -> None:
    """Before, a bind() OverflowError or int() ValueError traceback."""
    config = tmp_path / "config.yaml"
    config.write_text(LOCAL.read_text().replace("port: 8000", "port: 70000", 1))
    runs = {
        "argument --port: '70000' is not a TCP port (1-65535)": _agentserve("run", "--port", "70000"),
        "METRICS_PORT 'metrics' is not a TCP port": _agentserve("run", f"--port={free_port()}", METRICS_PORT="metrics"),
        f"{config}: http_options.port 70000 is not a TCP port": _agentserve("run", "--config", str(config)),
    }
    for message, done in runs.items():
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and "starting Ray" not in done.stdout
