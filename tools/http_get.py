"""``http_get``: fetch a URL for the agent, guarded against SSRF.

The guard, on the first request and again on every redirect hop (redirects are
followed by hand, never by httpx):

* only ``http`` and ``https``, no ``user:pass@`` in the URL;
* the host is resolved once (numeric hosts in any form inet_aton accepts, such as
  ``2130706433``, ``0x7f000001`` or ``127.1``, are parsed, never looked up; ``localhost``
  names are loopback) and the fetch is refused if ANY address is not public:
  private, loopback, link-local, site-local, multicast, reserved, unspecified, CGNAT,
  the cloud metadata addresses, or an IPv6 address embedding such an IPv4 one;
* DNS rebinding is closed by connecting to the verified IP itself: the request URL
  carries the IP, the ``Host`` header the original name, and for https the
  ``sni_hostname`` request extension makes httpcore send SNI for, and verify the
  certificate against, the original name (``ssl.SSLContext.check_hostname``);
* one wall-clock deadline covers resolution, every hop and the body; the body is
  streamed and cut at ``max_bytes`` (``truncated``); only text-like content types are
  returned; proxies from the environment are ignored (``trust_env=False``).

Every refusal is a ``ToolFailure`` whose message is meant for the LLM.
"""

from __future__ import annotations

import asyncio
import codecs
import ipaddress
import re
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from tools.base import Tool, ToolFailure

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``(host, port) -> addresses``; raises ``OSError`` when the name does not resolve."""
AddressPolicy = Callable[[IPAddress], bool]
"""Whether a resolved address may be connected to."""

METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
TEXT_TYPES = frozenset(
    "application/" + sub
    for sub in ("json", "xml", "javascript", "x-javascript", "ecmascript", "yaml", "x-yaml", "x-ndjson")
)
"""Text-like types besides ``text/*``, ``*+json`` and ``*+xml``."""
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_HOSTNAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")
_NUMERIC_HOST = re.compile(r"[0-9][0-9a-fx.]*")
_HEADERS = {
    "User-Agent": "agentserve-http_get/1",
    "Accept": "text/*, application/json, application/xml;q=0.9, */*;q=0.1",
    "Accept-Encoding": "identity",  # NOTE: so max_bytes bounds what we hold, not a compressed size.
}


def is_public_address(ip: IPAddress) -> bool:
    """Whether ``ip`` is a globally routable unicast address that is not a metadata endpoint."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public_address(ip.ipv4_mapped)
        embedded = ip.sixtofour or (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None)
        if (embedded is not None and not is_public_address(embedded)) or ip.is_site_local:
            return False
    bad = ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
    return ip.is_global and not (bad or ip.is_reserved or ip.is_unspecified or ip in METADATA_ADDRESSES)


def _not_metadata(ip: IPAddress) -> bool:
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return ip not in METADATA_ADDRESSES and mapped not in METADATA_ADDRESSES


def parse_ip_host(host: str) -> IPAddress | None:
    """The address a numeric host denotes, in any form ``inet_aton`` accepts (``0177.1``, ``0x7f000001``)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_HOST.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


async def system_resolve(host: str, port: int) -> list[str]:
    """Resolve with the event loop's ``getaddrinfo``."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def is_text_type(content_type: str) -> bool:
    return content_type.startswith("text/") or content_type in TEXT_TYPES or content_type.endswith(("+json", "+xml"))


class HttpGetArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2048, description="The http(s) URL to fetch.")
    max_bytes: int | None = Field(
        default=None, ge=1, description="Read at most this many bytes of the body (the server caps it too)."
    )


class HttpGetTool(Tool):
    """Fetch a public http(s) URL and return its text.

    Args:
        timeout_s: Deadline for the whole call: resolution, every hop and the body.
        max_bytes: Most body bytes read; a caller's ``max_bytes`` can only lower it.
        max_redirects: Most redirects followed; one more is an error.
        allow_private: Allow any address but the metadata ones. ONLY for tests.
        resolve: Name resolver; defaults to the loop's ``getaddrinfo``.
        is_allowed: Address policy; overrides ``allow_private``. Defaults to ``is_public_address``.
        ssl_context: TLS context (e.g. a private CA); defaults to httpx's (certifi, verified).
    """

    name = "http_get"
    description = (
        "Fetch a public web page or API over http(s) with GET and return its text as JSON "
        '{"url", "status", "content_type", "truncated", "text"}. Only text, HTML, JSON and XML '
        "responses are returned; long bodies are cut off (truncated=true). Private and internal "
        "addresses are refused."
    )
    Args = HttpGetArgs

    def __init__(
        self,
        *,
        timeout_s: float = 10.0,
        max_bytes: int = 200_000,
        max_redirects: int = 3,
        allow_private: bool = False,
        resolve: Resolver | None = None,
        is_allowed: AddressPolicy | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if timeout_s <= 0 or max_bytes < 1 or max_redirects < 0:
            raise ValueError("timeout_s and max_bytes must be positive, max_redirects not negative")
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self._resolve = resolve or system_resolve
        self._is_allowed = is_allowed or (_not_metadata if allow_private else is_public_address)
        self._ssl = ssl_context or httpx.create_ssl_context()

    async def run(self, args: HttpGetArgs) -> dict[str, Any]:
        limit = min(args.max_bytes or self.max_bytes, self.max_bytes)
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._fetch(args.url.strip(), limit)
        except (TimeoutError, httpx.TimeoutException):
            raise ToolFailure(f"Fetching {args.url} timed out after {self.timeout_s:g} s.") from None

    async def _fetch(self, raw_url: str, limit: int) -> dict[str, Any]:
        try:
            url = httpx.URL(raw_url)
        except httpx.InvalidURL as exc:
            raise ToolFailure(f"Invalid URL {raw_url!r}: {exc}.") from None
        for _ in range(self.max_redirects + 1):
            ip, host = await self._check(url)
            headers = {**_HEADERS, "Host": url.netloc.decode("ascii")}
            # NOTE: connect to the verified IP; SNI and certificate checks use the name.
            extensions = {"sni_hostname": host} if url.scheme == "https" and parse_ip_host(host) is None else {}
            async with httpx.AsyncClient(
                verify=self._ssl, trust_env=False, follow_redirects=False, timeout=self.timeout_s
            ) as client:
                request = client.build_request(
                    "GET", url.copy_with(host=str(ip)), headers=headers, extensions=extensions
                )
                try:
                    response = await client.send(request, stream=True)
                except httpx.TimeoutException:
                    raise
                except httpx.HTTPError as exc:
                    raise ToolFailure(f"Could not fetch {url}: {_describe(exc)}.") from None
                try:
                    location = response.headers.get("location")
                    if response.status_code in REDIRECT_STATUSES and location:
                        try:
                            url = url.join(location)
                        except httpx.InvalidURL:
                            raise ToolFailure(f"{url} redirected to an invalid URL.") from None
                        continue
                    return await self._read(url, response, limit)
                finally:
                    await response.aclose()
        raise ToolFailure(f"Too many redirects (more than {self.max_redirects}); stopped at {url}.")

    async def _check(self, url: httpx.URL) -> tuple[IPAddress, str]:
        """The address to connect to for ``url`` and its host; refuses what the guard forbids."""
        if url.scheme not in ("http", "https"):
            raise ToolFailure(f"Refused {url}: only http and https URLs can be fetched.")
        if url.userinfo:
            raise ToolFailure("Refused: URLs with credentials (user:password@) are not allowed.")
        host = url.raw_host.decode("ascii").lower().rstrip(".")
        port = url.port or (443 if url.scheme == "https" else 80)
        literal = parse_ip_host(host)
        if literal is not None:
            addresses: list[IPAddress] = [literal]
        elif host == "localhost" or host.endswith(".localhost"):
            addresses = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
        elif not _HOSTNAME.fullmatch(host):
            raise ToolFailure(f"Refused {url}: {host!r} is not a valid host name.")
        else:
            try:
                found = await self._resolve(host, port)
                addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in found]
            except (OSError, ValueError):
                addresses = []
            if not addresses:
                raise ToolFailure(f"Could not resolve the host {host!r}.")
        for ip in addresses:
            if not self._is_allowed(ip):
                where = "is" if literal is not None else f"resolves to {ip}, which is"
                raise ToolFailure(f"Refused {url}: {host!r} {where} a private, internal or reserved address.")
        return addresses[0], host

    async def _read(self, url: httpx.URL, response: httpx.Response, limit: int) -> dict[str, Any]:
        content_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if not is_text_type(content_type):
            kind = f"of type {content_type!r}" if content_type else "without a content type"
            raise ToolFailure(f"Refused: {url} returned a response {kind}; only text, HTML, JSON and XML are returned.")
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise ToolFailure(f"Refused: {url} sent a {encoding!r}-encoded body, which is not supported.")
        body = bytearray()
        truncated = False
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > limit:
                del body[limit:]
                truncated = True
                break
        try:
            decoder = codecs.getincrementaldecoder(response.charset_encoding or "utf-8")(errors="replace")
        except LookupError:
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        # NOTE: final=False on a cut body drops a trailing partial character instead of garbling it.
        text = decoder.decode(bytes(body), final=not truncated)
        return {
            "url": str(url),
            "status": response.status_code,
            "content_type": content_type,
            "truncated": truncated,
            "text": text,
        }


def _describe(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "the connection failed (refused, unreachable or a TLS error)"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the server broke the HTTP protocol"
    return f"the request failed ({type(exc).__name__})"
