"""http_get against a real HTTP(S) server on 127.0.0.1, and its SSRF guard.

No test reaches the internet: every tool gets an injected resolver, so names are
never looked up for real; tools fetching literal addresses get one that fails if called.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from agent.dto import ToolErrorKind, ToolInvocation
from tests.support.tls import self_signed_cert
from tools import ToolFailure, ToolRegistry
from tools.http_get import HttpGetArgs, HttpGetTool, IPAddress, Resolver, is_public_address, parse_ip_host

LOOPBACK = "127.0.0.1"


class Server(ThreadingHTTPServer):
    daemon_threads = True
    paths: list[str]


class Handler(BaseHTTPRequestHandler):
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(parts.query).items()}
        route = parts.path
        self.server.paths.append(route)
        if route == "/text":
            self._send(200, "text/plain; charset=utf-8", b"hello world")
        elif route == "/json":
            self._send(200, "application/json", json.dumps({"answer": 42}).encode())
        elif route == "/latin1":
            self._send(200, "text/plain; charset=iso-8859-1", "café".encode("latin-1"))
        elif route == "/big":
            self._send(200, "text/plain", b"a" * 100_000)
        elif route == "/euros":
            self._send(200, "text/plain; charset=utf-8", ("€" * 100).encode())  # 3 bytes each
        elif route == "/missing":
            self._send(404, "text/html", b"<h1>not found</h1>")
        elif route == "/image":
            self._send(200, "image/png", b"\x89PNG\r\n\x1a\n")
        elif route == "/untyped":
            self._send(200, None, b"???")
        elif route == "/gzip":
            self._send(200, "text/plain", b"\x1f\x8b", {"Content-Encoding": "gzip"})
        elif route == "/host":
            self._send(200, "text/plain", self.headers.get("Host", "").encode())
        elif route.startswith("/redirect/"):
            left = int(route.rsplit("/", 1)[1])
            self._send(302, "text/plain", b"", {"Location": f"/redirect/{left - 1}" if left > 1 else "/text"})
        elif route == "/to":
            self._send(int(query.get("status", "302")), "text/plain", b"", {"Location": query["u"]})
        elif route == "/slow":
            time.sleep(3)
            self._send(200, "text/plain", b"late")
        elif route == "/drip":  # a byte every 0.1 s: no single read is slow, the whole body is
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "100")
            self.end_headers()
            try:
                for _ in range(100):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass
        else:
            self._send(404, "text/plain", b"no such route")

    def _send(self, status: int, ctype: str | None, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@dataclass
class Running:
    server: Server
    port: int

    @property
    def paths(self) -> list[str]:
        return self.server.paths


def serve(tls: ssl.SSLContext | None = None) -> Iterator[Running]:
    server = Server((LOOPBACK, 0), Handler)
    server.paths = []
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Running(server, server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def http_server() -> Iterator[Running]:
    yield from serve()


@pytest.fixture
def server(http_server: Running) -> Running:
    http_server.paths.clear()
    return http_server


def resolver(mapping: dict[str, list[str]], calls: list[str] | None = None) -> Resolver:
    async def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(host)
        if host not in mapping:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return mapping[host]

    return resolve


async def no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"unexpected DNS lookup of {host!r}")


def local_tool(**options: Any) -> HttpGetTool:
    """A tool allowed to reach the local server (allow_private), knowing public.test as 127.0.0.1."""
    options.setdefault("resolve", resolver({"public.test": [LOOPBACK]}))
    return HttpGetTool(allow_private=True, **options)


def guarded_tool(**options: Any) -> HttpGetTool:
    """A tool with the default guard; names resolve only through this fake DNS."""
    dns = {
        "public.test": [LOOPBACK],
        "private.test": ["10.1.2.3"],
        "mixed.test": ["93.184.216.34", "10.0.0.5"],
        "metadata.test": ["169.254.169.254"],
        "v6loop.test": ["::1"],
    }
    return HttpGetTool(resolve=resolver(dns), **options)


async def fetch(tool: HttpGetTool, url: str, **args: Any) -> dict[str, Any]:
    return await tool.run(HttpGetArgs(url=url, **args))


# --- happy paths (allow_private=True, so the local server is reachable) -------------------


async def test_fetches_text(server: Running) -> None:
    result = await fetch(local_tool(resolve=no_dns), f"http://{LOOPBACK}:{server.port}/text")

    assert result == {
        "url": f"http://{LOOPBACK}:{server.port}/text",
        "status": 200,
        "content_type": "text/plain",
        "truncated": False,
        "text": "hello world",
    }


async def test_fetches_json(server: Running) -> None:
    result = await fetch(local_tool(), f"http://public.test:{server.port}/json")

    assert result["content_type"] == "application/json"
    assert json.loads(result["text"]) == {"answer": 42}


async def test_decodes_the_declared_charset(server: Running) -> None:
    result = await fetch(local_tool(), f"http://public.test:{server.port}/latin1")

    assert result["text"] == "café"


async def test_error_statuses_are_returned_not_raised(server: Running) -> None:
    result = await fetch(local_tool(), f"http://public.test:{server.port}/missing")

    assert (result["status"], result["content_type"], result["text"]) == (404, "text/html", "<h1>not found</h1>")


async def test_connects_to_the_verified_ip_with_the_name_in_the_host_header(server: Running) -> None:
    calls: list[str] = []
    tool = local_tool(resolve=resolver({"public.test": [LOOPBACK]}, calls))

    result = await fetch(tool, f"http://public.test:{server.port}/host")

    # NOTE: public.test exists only in the fake resolver: reaching the server proves httpx
    # connected to the IP we resolved and checked, and never looked the name up itself.
    assert result["text"] == f"public.test:{server.port}"
    assert calls == ["public.test"]


@pytest.mark.parametrize(("tool_limit", "asked", "expected"), [(1000, None, 1000), (1000, 10, 10), (1000, 10**6, 1000)])
async def test_truncates_at_max_bytes(server: Running, tool_limit: int, asked: int | None, expected: int) -> None:
    result = await fetch(local_tool(max_bytes=tool_limit), f"http://public.test:{server.port}/big", max_bytes=asked)

    assert result["truncated"] is True
    assert result["text"] == "a" * expected


async def test_truncation_drops_a_cut_multibyte_character(server: Running) -> None:
    result = await fetch(local_tool(max_bytes=10), f"http://public.test:{server.port}/euros")

    assert result["truncated"] is True
    assert result["text"] == "€€€"  # 9 bytes; the 10th byte began a fourth euro


async def test_follows_redirects_re_resolving_every_hop(server: Running) -> None:
    calls: list[str] = []
    tool = local_tool(max_redirects=2, resolve=resolver({"public.test": [LOOPBACK]}, calls))

    result = await fetch(tool, f"http://public.test:{server.port}/redirect/2")

    assert result["url"] == f"http://public.test:{server.port}/text"
    assert result["text"] == "hello world"
    assert server.paths == ["/redirect/2", "/redirect/1", "/text"]
    assert calls == ["public.test"] * 3


async def test_too_many_redirects_is_refused(server: Running) -> None:
    with pytest.raises(ToolFailure, match="Too many redirects"):
        await fetch(local_tool(max_redirects=2), f"http://public.test:{server.port}/redirect/3")

    assert server.paths == ["/redirect/3", "/redirect/2", "/redirect/1"]


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ("/image", "of type 'image/png'"),
        ("/untyped", "without a content type"),
        ("/gzip", "'gzip'-encoded"),
    ],
)
async def test_non_text_responses_are_refused(server: Running, route: str, message: str) -> None:
    with pytest.raises(ToolFailure, match=re.escape(message)):
        await fetch(local_tool(), f"http://public.test:{server.port}{route}")


@pytest.mark.parametrize("route", ["/slow", "/drip"])
async def test_one_deadline_covers_the_whole_fetch(server: Running, route: str) -> None:
    started = time.monotonic()

    with pytest.raises(ToolFailure, match=re.escape("timed out after 0.5 s")):
        await fetch(local_tool(timeout_s=0.5), f"http://public.test:{server.port}{route}")

    assert time.monotonic() - started < 2


async def test_connection_failure_is_a_tool_failure() -> None:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        closed_port = probe.getsockname()[1]

    with pytest.raises(ToolFailure, match=r"Could not fetch .*connection failed"):
        await fetch(local_tool(), f"http://public.test:{closed_port}/text")


async def test_unknown_name_is_a_tool_failure() -> None:
    with pytest.raises(ToolFailure, match=re.escape("Could not resolve the host 'nowhere.test'")):
        await fetch(local_tool(), "http://nowhere.test/")


# --- https: SNI and certificate verification use the name, the connection the IP --------


@dataclass
class Tls:
    server: Running
    client: ssl.SSLContext
    sni: list[str | None]


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tls]:
    directory: Path = tmp_path_factory.mktemp("tls")
    chain, private = self_signed_cert(directory, names=("public.test",), ips=())
    sni: list[str | None] = []
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(chain, private)
    tls.sni_callback = lambda _sock, server_name, _ctx: sni.append(server_name)
    client = ssl.create_default_context(cafile=str(chain))
    for running in serve(tls):
        yield Tls(running, client, sni)


async def test_https_verifies_the_certificate_against_the_name(https_server: Tls) -> None:
    https_server.sni.clear()
    tool = local_tool(ssl_context=https_server.client)

    result = await fetch(tool, f"https://public.test:{https_server.server.port}/host")

    assert result["text"] == f"public.test:{https_server.server.port}"
    assert https_server.sni == ["public.test"]


async def test_https_refuses_a_certificate_for_another_name(https_server: Tls) -> None:
    tool = local_tool(ssl_context=https_server.client, resolve=resolver({"other.test": [LOOPBACK]}))

    with pytest.raises(ToolFailure, match="Could not fetch"):
        await fetch(tool, f"https://other.test:{https_server.server.port}/host")


# --- the default guard -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:{port}/text", "'127.0.0.1' is a private"),
        ("http://localhost:{port}/text", "'localhost' resolves to 127.0.0.1"),
        ("http://app.localhost:{port}/text", "resolves to 127.0.0.1"),
        ("http://[::1]:{port}/text", "'::1' is a private"),
        ("http://169.254.169.254/latest/meta-data/", "'169.254.169.254' is a private"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "is a private"),
        ("http://100.100.100.200/latest/meta-data/", "is a private"),
        ("http://10.0.0.1/", "'10.0.0.1' is a private"),
        ("http://192.168.1.1/", "is a private"),
        ("http://0.0.0.0:{port}/text", "'0.0.0.0' is a private"),
        ("http://[::]:{port}/text", "is a private"),
        ("http://224.0.0.1/", "is a private"),
        ("http://2130706433:{port}/text", "'2130706433' is a private"),
        ("http://0x7f000001:{port}/text", "'0x7f000001' is a private"),
        ("http://0x7f.1:{port}/text", "is a private"),
        ("http://127.1:{port}/text", "'127.1' is a private"),
        ("http://0177.0.0.1:{port}/text", "Invalid URL"),
        ("http://[::ffff:127.0.0.1]:{port}/text", "is a private"),
        ("http://[::ffff:169.254.169.254]/", "is a private"),
        ("http://[::ffff:7f00:1]:{port}/text", "is a private"),
        ("http://[2002:7f00:1::]/", "is a private"),
        ("http://[64:ff9b::a9fe:a9fe]/", "is a private"),
        ("http://[fe80::1]/", "is a private"),
        ("http://[fec0::1]/", "is a private"),
        ("https://127.0.0.1:{port}/", "is a private"),
        ("http://private.test:{port}/text", "'private.test' resolves to 10.1.2.3"),
        ("http://mixed.test/", "'mixed.test' resolves to 10.0.0.5"),
        ("http://metadata.test/", "resolves to 169.254.169.254"),
        ("http://v6loop.test/", "resolves to ::1"),
        ("file:///etc/passwd", "only http and https"),
        ("ftp://public.test/file", "only http and https"),
        ("gopher://public.test:70/", "only http and https"),
        ("http://user:pass@public.test:{port}/text", "credentials"),
        ("http://user@public.test:{port}/text", "credentials"),
        ("http://%31%32%37.0.0.1:{port}/text", "not a valid host name"),
        ("not a url", "only http and https"),
    ],
)
async def test_guard_refuses_before_connecting(server: Running, url: str, message: str) -> None:
    with pytest.raises(ToolFailure, match=re.escape(message)):
        await fetch(guarded_tool(), url.format(port=server.port))

    assert server.paths == []


async def test_literal_addresses_are_never_looked_up() -> None:
    with pytest.raises(ToolFailure, match="is a private"):
        await fetch(HttpGetTool(resolve=no_dns), "http://2130706433/")


async def test_allow_private_still_refuses_metadata_addresses() -> None:
    for url in ("http://169.254.169.254/", "http://[::ffff:169.254.169.254]/", "http://100.100.100.200/"):
        with pytest.raises(ToolFailure, match="is a private"):
            await fetch(local_tool(resolve=no_dns), url)


class AllowFirstAddress:
    """Treats the first address asked about as public (it stands for a public site), then guards for real."""

    def __init__(self) -> None:
        self.asked: list[IPAddress] = []

    def __call__(self, ip: IPAddress) -> bool:
        self.asked.append(ip)
        return len(self.asked) == 1 or is_public_address(ip)


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}/text",
        "http://localhost:{port}/text",
        "http://[::1]:{port}/text",
        "http://169.254.169.254/latest/meta-data/",
        "http://private.test:{port}/text",
        "http://2130706433:{port}/text",
        "file:///etc/passwd",
        "http://user:pw@public.test:{port}/text",
    ],
)
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirect_to_a_private_address_is_refused(server: Running, target: str, status: int) -> None:
    policy = AllowFirstAddress()
    tool = guarded_tool(is_allowed=policy)
    target = quote(target.format(port=server.port), safe="")

    with pytest.raises(ToolFailure, match="Refused"):
        await fetch(tool, f"http://public.test:{server.port}/to?status={status}&u={target}")

    assert server.paths == ["/to"]  # the first hop was fetched, the redirect target never was


async def test_a_refusal_reaches_the_llm_as_a_tool_error() -> None:
    registry = ToolRegistry([HttpGetTool(resolve=no_dns)])

    result = await registry.execute(ToolInvocation(name="http_get", arguments={"url": "http://169.254.169.254/"}))

    assert result.is_error
    assert result.error_kind is ToolErrorKind.FAILED
    assert result.content.startswith("Refused http://169.254.169.254/")


async def test_overlong_urls_are_invalid_arguments() -> None:
    registry = ToolRegistry([HttpGetTool(resolve=no_dns)])

    result = await registry.execute(ToolInvocation(name="http_get", arguments={"url": "http://a.test/" + "a" * 2048}))

    assert result.error_kind is ToolErrorKind.INVALID_ARGUMENTS


def test_the_default_tool_needs_no_arguments() -> None:
    tool = HttpGetTool()

    assert (tool.name, tool.timeout_s, tool.max_bytes, tool.max_redirects) == ("http_get", 10.0, 200_000, 3)


# --- the address policy and numeric hosts ------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "10.0.0.1", "172.16.0.1", "192.168.0.1", "169.254.169.254", "100.64.0.1",
        "100.100.100.200", "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "192.0.2.1",
        "::1", "::", "fe80::1", "fc00::1", "fd00:ec2::254", "fec0::1", "ff02::1", "::ffff:10.0.0.1",
        "::ffff:169.254.169.254", "::7f00:1", "2002:a00:1::", "64:ff9b::a00:1", "2001:db8::1",
    ],
)  # fmt: skip
def test_non_public_addresses(address: str) -> None:
    ip = parse_ip_host(address)

    assert ip is not None
    assert not is_public_address(ip)


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses(address: str) -> None:
    ip = parse_ip_host(address)

    assert ip is not None
    assert is_public_address(ip)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("::ffff:127.0.0.1", "::ffff:7f00:1"),
        ("example.test", None),
        ("cafe.be", None),
        ("1.2.3.4.5", None),
    ],
)
def test_numeric_hosts_in_odd_forms(host: str, expected: str | None) -> None:
    ip = parse_ip_host(host)

    assert (str(ip) if ip else None) == expected
