"""Reaching an upstream through a proxy: HTTP CONNECT or SOCKS, by python-socks (a maintained
client, not hand-written SOCKS), and which proxy applies to which upstream.

An `[[upstreams]]` entry's own `proxy` wins; without one, HTTPS_PROXY (HTTP_PROXY for an http://
upstream) and NO_PROXY from the environment apply, as curl and every HTTP library read them.
"""
from __future__ import annotations

import socket
import urllib.request
from typing import Mapping
from urllib.parse import urlsplit

from python_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError
from python_socks.async_.asyncio import Proxy

from antex.upstream.wire import ConnectFailed


async def tunnel(proxy_url: str, host: str, port: int) -> socket.socket:
    """A connected socket to host:port through the proxy (TLS, if any, is started over it after)."""
    try:
        return await Proxy.from_url(proxy_url, rdns=True).connect(dest_host=host, dest_port=port)
    except (ProxyConnectionError, ProxyTimeoutError, ProxyError, OSError) as exc:
        raise ConnectFailed(f"the proxy {redacted(proxy_url)} could not reach {host}:{port}: {exc}") from None


def for_upstream(configured: str, base_url: str, environ: Mapping[str, str]) -> str:
    """The proxy URL for an upstream: its entry's, else the environment's (honouring NO_PROXY), else ''."""
    if configured:
        return configured
    url = urlsplit(base_url)
    wanted = ("https_proxy", "HTTPS_PROXY") if url.scheme == "https" else ("http_proxy", "HTTP_PROXY")
    found = next((environ[name].strip() for name in wanted if environ.get(name, "").strip()), "")
    if not found:
        return ""
    no_proxy = next((environ[name] for name in ("no_proxy", "NO_PROXY") if name in environ), "")
    if no_proxy and _bypassed(url.hostname or "", url.port, no_proxy):
        return ""
    return found if "://" in found else "http://" + found


def _bypassed(host: str, port: int | None, no_proxy: str) -> bool:
    """NO_PROXY as urllib reads it (`*`, host names and domain suffixes, optional :port)."""
    if no_proxy.strip() == "*":
        return True
    address = f"{host}:{port}" if port else host
    return bool(urllib.request.proxy_bypass_environment(address, {"no": no_proxy}))


def redacted(proxy_url: str) -> str:
    """The proxy URL without its credentials, for logs and errors."""
    url = urlsplit(proxy_url)
    return f"{url.scheme}://{url.hostname}" + (f":{url.port}" if url.port else "")
