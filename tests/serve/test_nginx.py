"""The shipped nginx config in front of the deployed app: TLS, redirect, and SSE that streams.

A real nginx runs deploy/nginx/compose.conf, with only host-specific things changed
(certificate paths, log paths, listen addresses, the upstream address: see
``localize``), so the server blocks and the included deploy/nginx/agentserve-proxy.conf
are the shipped ones. It proxies to this session's Serve app and is stopped by its PID.
"""

from __future__ import annotations

import os
import pwd
import re
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from serve_app.scripted_llm import ScriptedLLMServer
from tests.serve.conftest import free_port
from tests.support.nginx import NGINX_DIR, localize, nginx_binary
from tests.support.sse import parse_sse

pytestmark = pytest.mark.serve


@dataclass
class Nginx:
    https_url: str
    http_url: str
    ca_file: Path


def sub_once(pattern: str, repl: str, text: str) -> str:
    new, count = re.subn(pattern, repl, text, flags=re.M)
    assert count >= 1, f"the shipped compose.conf no longer has {pattern!r}: update this test's localize step"
    return new


def wait_for_port(proc: subprocess.Popen[bytes], port: int, error_log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"nginx exited {proc.returncode}: {error_log.read_text() if error_log.exists() else ''}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail("nginx did not listen within 30 s")


@pytest.fixture(scope="module")
def nginx(deployed_app: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    prefix = tmp_path_factory.mktemp("nginx")
    (prefix / "logs").mkdir()
    https_port, http_port = free_port(), free_port()
    serve = urlsplit(deployed_app)
    conf = localize((NGINX_DIR / "compose.conf").read_text(), prefix)
    conf = sub_once(r"server agentserve:\d+;", f"server 127.0.0.1:{serve.port};", conf)
    conf = sub_once(r"^\s*listen \[::\]:.*$", "", conf)  # IPv6 may be off on a test host
    conf = sub_once(r"listen 443 ", f"listen 127.0.0.1:{https_port} ", conf)
    conf = sub_once(r"listen 80 ", f"listen 127.0.0.1:{http_port} ", conf)
    temp = " ".join(
        f"{kind}_temp_path {prefix}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # NOTE: workers as this user: as root nginx would drop them to `nobody`, which cannot
    # enter pytest's private temp directory.
    user = pwd.getpwuid(os.getuid()).pw_name
    path = prefix / "nginx.conf"
    path.write_text(f"user {user};\nworker_processes 1;\nevents {{}}\nhttp {{\n{temp}\n{conf}\n}}\n")
    error_log = prefix / "logs" / "error.log"
    proc = subprocess.Popen(
        [nginx_binary(), "-p", str(prefix), "-c", str(path),
         "-g", f"daemon off; pid {prefix}/nginx.pid; error_log {error_log} info;"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(proc, https_port, error_log)
        yield Nginx(f"https://127.0.0.1:{https_port}", f"http://127.0.0.1:{http_port}", prefix / "fullchain.pem")
    finally:
        proc.terminate()  # SIGTERM: nginx's fast shutdown, the master stops its workers
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
async def via_nginx(nginx: Nginx) -> AsyncIterator[httpx.AsyncClient]:
    tls = ssl.create_default_context(cafile=str(nginx.ca_file))
    async with httpx.AsyncClient(base_url=nginx.https_url, verify=tls, timeout=60) as client:
        yield client


async def read_until_first_token(stream: AsyncIterator[str]) -> list[str]:
    lines: list[str] = []
    async for line in stream:
        lines.append(line)
        if lines[-2:-1] == ["event: token"] and line.startswith("data:"):
            return lines
    pytest.fail(f"the stream ended without a token event: {lines}")


async def test_the_stream_arrives_event_by_event_not_buffered(
    via_nginx: httpx.AsyncClient, scripted_llm: ScriptedLLMServer
) -> None:
    # 100 tokens, 50 ms apart at the scripted LLM. Had nginx (or gzip) held the response
    # back, the first event could only reach us after the LLM had sent its last token.
    state = scripted_llm.app.state
    async with via_nginx.stream("POST", "/api/chat/stream", json={"message": "slow: 100"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        # (The app's `X-Accel-Buffering: no` is consumed by nginx, which acts on X-Accel-* itself.)
        assert "content-encoding" not in r.headers
        lines = r.aiter_lines()
        head = await read_until_first_token(lines)
        [sent] = state.requests
        assert sent["id"] not in state.finished, "the first event came only after the LLM's whole reply: buffered"
        rest = [line async for line in lines]
    events = parse_sse("\n".join(head + rest))
    names = [n for n, _ in events]
    assert names.count("token") == 100 and names[-2:] == ["message", "done"]
    assert events[-2][1]["content"] == " ".join(f"t{i}" for i in range(100))
    assert await scripted_llm.stream_end(sent["id"]) == "finished"


async def test_a_client_that_leaves_cancels_the_turn_through_nginx(
    via_nginx: httpx.AsyncClient, scripted_llm: ScriptedLLMServer
) -> None:
    state = scripted_llm.app.state
    async with via_nginx.stream("POST", "/api/chat/stream", json={"message": "slow: 200"}) as r:
        await read_until_first_token(r.aiter_lines())
    # nginx closes its upstream connection when the client goes (proxy_ignore_client_abort off).
    [sent] = state.requests
    assert await scripted_llm.stream_end(sent["id"], 30) == "aborted"


async def test_chat_through_nginx_keeps_the_request_id_and_gets_hsts(
    via_nginx: httpx.AsyncClient, http: httpx.AsyncClient
) -> None:
    r = await via_nginx.post("/api/chat", json={"message": "What is 6*7?"}, headers={"X-Request-ID": "nginx-rid-1"})
    assert r.status_code == 200, r.text
    assert "42" in r.json()["response"]
    # Exactly one: the Serve proxy adds it, the app (echo_request_id=False) does not again.
    assert r.headers.get_list("x-request-id") == ["nginx-rid-1"]
    # X-Forwarded-Proto: https from the snippet is what makes the app send HSTS.
    assert r.headers["strict-transport-security"].startswith("max-age=")
    direct = await http.get("/live")
    assert direct.status_code == 200 and "strict-transport-security" not in direct.headers
    made = await via_nginx.get("/live")
    made_ids = made.headers.get_list("x-request-id")
    assert len(made_ids) == 1 and len(made_ids[0]) >= 16  # none given: one was made


async def test_the_longest_valid_url_reaches_the_app_through_nginx(via_nginx: httpx.AsyncClient) -> None:
    q = "\U0001d757" * 2000  # ~24 KB percent-encoded: over nginx's default 8k header buffers
    r = await via_nginx.get("/api/memory/search", params={"q": q, "user_id": "long-url"})
    assert r.status_code == 200, r.text[:300]
    r = await via_nginx.get("/api/memory/search", params={"q": q + "x", "user_id": "long-url"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "q"


async def test_an_oversized_body_gets_the_apps_413_not_nginxs(via_nginx: httpx.AsyncClient) -> None:
    r = await via_nginx.post(
        "/api/chat", content=b'{"message": "' + b"x" * 1_200_000 + b'"}', headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert r.json()["error"]["type"]


async def test_plain_http_is_redirected_to_https(nginx: Nginx) -> None:
    async with httpx.AsyncClient(base_url=nginx.http_url, timeout=30) as client:
        r = await client.get("/api/tools?x=1")
    assert r.status_code == 301
    assert r.headers["location"] == "https://127.0.0.1/api/tools?x=1"
