"""How one provider reaches its upstream: which transport, through which proxy, with which TLS.

Every provider runs on the own HTTP/1.1 transport (:class:`UpstreamTransport`) unless it needs
what only httpx's own transport (``httpx.AsyncHTTPTransport``, httpcore underneath) offers:

* HTTP/2 (``http2: true``; the ``h2`` package), or
* a proxy: the provider's ``proxy``, or else the environment's ``HTTPS_PROXY`` / ``HTTP_PROXY``
  / ``ALL_PROXY`` for its upstream's scheme, unless ``NO_PROXY`` names the upstream's host.
  ``proxy: ""`` (or ``false``) means no proxy, whatever the environment says.

A provider talks to one origin, so the choice is made once, when its client is built. Both
transports verify TLS with the same context: the system's trust store, or only the CA file the
provider names (``caBundle``), with its client certificate when it names one (``clientCert``).
"""

from __future__ import annotations

import ssl
import urllib.request
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import httpx

from router.transport.transport import UpstreamTransport

__all__ = ["Egress", "TransportKind", "open_transport", "proxy_for", "tls_context"]

TransportKind = Literal["own", "httpx"]


@dataclass(frozen=True)
class Egress:
    """A provider's way out: its ``proxy``, ``caBundle``, ``clientCert`` and ``http2`` config.

    ``proxy`` None follows the environment; "" goes direct whatever it says.
    """

    proxy: str | None = None
    ca_bundle: str | None = None
    client_cert: str | None = None
    http2: bool = False


def tls_context(ca_bundle: str | None, client_cert: str | None) -> ssl.SSLContext | None:
    """The context that verifies upstreams against ``ca_bundle`` only (a PEM file of CA
    certificates) and presents ``client_cert`` (one PEM file holding the certificate and its
    unencrypted key); None when neither is given (the system's trust store then).

    Raises ``OSError`` (a missing file) or ``ssl.SSLError`` (not PEM, or a key that does not
    match the certificate).
    """
    if not ca_bundle and not client_cert:
        return None
    context = ssl.create_default_context(cafile=ca_bundle or None)
    if client_cert:
        context.load_cert_chain(client_cert)
    return context


def proxy_for(url: str, proxy: str | None) -> str | None:
    """The proxy URL to reach ``url`` through, or None to go direct.

    ``proxy`` as configured: a URL is used as it is, "" means direct, None asks the environment
    (as Python's ``urllib.request`` reads it: upper or lower case names, ``NO_PROXY`` host
    suffixes and ``*``).
    """
    if proxy is not None:
        return proxy or None
    proxies = urllib.request.getproxies_environment()
    parts = urlsplit(url)
    found = proxies.get(parts.scheme) or proxies.get("all")
    # proxy_bypass_environment: in CPython's urllib.request, not in its type stubs.
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    if not found or bypass(parts.netloc, proxies):
        return None
    return found if "://" in found else f"http://{found}"


def open_transport(
    url: str, egress: Egress, *, max_connections: int, max_header_bytes: int = 64 * 1024
) -> tuple[httpx.AsyncBaseTransport, TransportKind]:
    """The transport for a provider whose upstream is ``url``, and which kind it is.

    ``max_header_bytes`` bounds a response head on the own transport; httpx's bounds it at
    100 KiB (h11) itself.
    """
    context = tls_context(egress.ca_bundle, egress.client_cert)
    proxy = proxy_for(url, egress.proxy)
    if proxy is None and not egress.http2:
        return UpstreamTransport(max_connections, context, max_header_bytes=max_header_bytes), "own"
    kept = httpx.AsyncHTTPTransport(
        verify=context or ssl.create_default_context(),
        http2=egress.http2,
        limits=httpx.Limits(max_connections=max_connections),
        proxy=proxy,
        trust_env=False,  # the proxy was chosen above; nothing else comes from the environment
    )
    return kept, "httpx"
