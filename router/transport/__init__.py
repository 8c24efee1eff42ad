"""The upstream transport: how adapters reach their upstreams, under httpx's transport seam.

:class:`UpstreamTransport` is the own HTTP/1.1 transport, the default;
:mod:`router.transport.egress` picks it or httpx's own transport per provider (HTTP/2, proxies)
and builds the TLS context both use.
"""

from router.transport.transport import UpstreamTransport

__all__ = ["UpstreamTransport"]
