"""``GET /metrics``: the Prometheus scrape endpoint (``metrics.enabled``, on by default).

It answers the admin token, or the read-only ``metrics.token`` that Prometheus sends as a bearer
token (``authorization`` in its scrape config), so a scraper never holds the admin token. The
metrics themselves are :mod:`router.gateway.metrics`.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from router.api.common import services
from router.errors import AuthenticationError, NotFound
from router.gateway.auth import bearer_token


async def metrics(request: Request) -> Response:
    app = services(request)
    if app.metrics is None:
        raise NotFound("Metrics are off (metrics.enabled = false).")
    token = app.settings.metrics_token
    given = bearer_token(request.scope["headers"])
    if not (
        token is not None
        and given is not None
        and hmac.compare_digest(given.encode(), token.encode())
    ):
        try:
            app.auth.require_admin(request.scope["headers"])
        except AuthenticationError as exc:
            raise AuthenticationError(
                "GET /metrics needs the metrics token (metrics.token) or the admin token as "
                "'Authorization: Bearer <token>'."
                if given is None
                else "The token is neither the metrics token nor the admin token."
            ) from exc
    body, content_type = app.metrics.exposition(request.headers.get("accept"))
    return Response(body, media_type=content_type)


routes = [Route("/metrics", metrics, methods=["GET"])]
