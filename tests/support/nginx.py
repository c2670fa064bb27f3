"""The shipped nginx configs on this host: a throwaway certificate, host paths, the nginx binary.

Shared by the config checks (tests/unit/test_compose.py) and the real nginx in
front of Serve (tests/serve/test_nginx.py).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NGINX_DIR = ROOT / "deploy" / "nginx"


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1/localhost: (fullchain.pem, privkey.pem)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    chain, private = directory / "fullchain.pem", directory / "privkey.pem"
    chain.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return chain, private


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
