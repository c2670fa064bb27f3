"""The shipped nginx configs on this host: a throwaway certificate, host paths, the nginx binary.

Shared by the config checks (tests/unit/test_compose.py) and the real nginx in
front of Serve (tests/serve/test_nginx.py).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.support.tls import self_signed_cert

ROOT = Path(__file__).resolve().parents[2]
NGINX_DIR = ROOT / "deploy" / "nginx"


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if not found:
        pytest.fail("nginx is not installed: apt-get install nginx-light (scripts/test.sh does)", pytrace=False)
    return found


def localize(text: str, tmp_path: Path) -> str:
    """Host-specific paths of a shipped config pointed into tmp_path; nothing else changed."""
    chain, key = self_signed_cert(tmp_path)
    text = re.sub(r"(ssl_certificate\s+)\S+;", rf"\g<1>{chain};", text)
    text = re.sub(r"(ssl_certificate_key\s+)\S+;", rf"\g<1>{key};", text)
    text = text.replace("/etc/nginx/snippets/agentserve-proxy.conf", str(NGINX_DIR / "agentserve-proxy.conf"))
    text = text.replace("/var/log/nginx/", f"{tmp_path}/logs/").replace("/run/nginx.pid", f"{tmp_path}/nginx.pid")
    return text
