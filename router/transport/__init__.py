"""The upstream HTTP/1.1 transport: a connection pool under httpx's transport seam."""

from router.transport.pool import UpstreamTransport

__all__ = ["UpstreamTransport"]
