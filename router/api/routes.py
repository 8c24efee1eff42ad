"""The management routes beside the first resources (models, providers, requests).

Config, links, stats and the OpenAPI document, gathered so the application adds them in one line.
"""

from __future__ import annotations

from router.api import auth_failures, configs, links, openapi, stats, timeseries

routes = [
    *configs.routes,
    *links.routes,
    *timeseries.routes,
    *stats.routes,
    *openapi.routes,
    *auth_failures.routes,
]
