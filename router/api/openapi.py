"""``GET /openapi.json``: an OpenAPI 3.1 document of the management API, the Messages door and
the Responses API's stored responses.

Written by hand from the same field lists the store validates against, so it says what the server
does; tests/api/test_openapi.py checks that every management route is described and runs
schemathesis against a live server. ``/v1/messages`` and ``/v1/messages/count_tokens`` are
described too (Anthropic's shapes, the fields the door checks; everything else passes on).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from router.api.common import json_response

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_TEXT = {"type": "string", "minLength": 1, "maxLength": 200}
_NULLABLE_TEXT = {"type": ["string", "null"], "maxLength": 2000}
_INT = {"type": "integer", "minimum": -(2**53), "maximum": 2**53}
_MS = {"type": "string", "pattern": "^[0-9]{1,16}$", "description": "Unix time in milliseconds"}
_LIMITS = {
    "type": ["object", "null"],
    "additionalProperties": False,
    "properties": {k: {"type": "integer", "minimum": 1} for k in ("rpm", "rpd", "tpm")},
}
_CONFIG = {
    "type": "object",
    "description": "Config keys of the provider's type (camelCase); sensitive values are masked "
    "as '****' plus at most the last 4 characters.",
    "additionalProperties": True,
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"]},
                },
            }
        },
    },
    "ProviderInput": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "type"],
        "properties": {
            "id": {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,63}$"},
            "name": _TEXT,
            "type": {"type": "string"},
            "enabled": {"type": "boolean"},
            "priority": _INT,
            "weight": {"type": "integer", "minimum": 1, "maximum": 2**53},
            "description": _NULLABLE_TEXT,
            "config": _CONFIG,
            "limits": _LIMITS,
        },
    },
    "ProviderUpdate": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "name": _TEXT,
            "enabled": {"type": "boolean"},
            "priority": _INT,
            "weight": {"type": "integer", "minimum": 1, "maximum": 2**53},
            "description": _NULLABLE_TEXT,
            "config": _CONFIG,
            "limits": _LIMITS,
        },
    },
    "Provider": {"type": "object", "required": ["id", "name", "type", "enabled", "config"]},
    "ProviderList": {"type": "object", "required": ["data"]},
    "Deleted": {
        "type": "object",
        "required": ["id", "deleted", "archived"],
        "properties": {
            "id": {"type": "string"},
            "deleted": {"type": "boolean"},
            "archived": {"type": "boolean"},
        },
    },
    "Probe": {
        "type": "object",
        "required": ["ok", "latency_ms"],
        "properties": {
            "ok": {"type": "boolean"},
            "latency_ms": {"type": "integer"},
            "status_code": {"type": "integer"},
            "error": {"type": "string"},
        },
    },
    "Config": {
        "type": "object",
        "required": ["provider_id", "config"],
        "properties": {"provider_id": {"type": "string"}, "config": _CONFIG},
    },
    "ConfigInput": {
        "type": "object",
        "additionalProperties": False,
        "required": ["config"],
        "properties": {"config": _CONFIG},
    },
    "ConfigValue": {
        "type": "object",
        "additionalProperties": False,
        "required": ["value"],
        "properties": {"value": {}, "is_sensitive": {"type": "boolean"}},
    },
    "ModelInput": {
        "type": "object",
        "additionalProperties": False,
        "required": ["id"],
        "properties": {
            "id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,199}$"},
            "name": {"type": ["string", "null"], "maxLength": 200},
            "description": _NULLABLE_TEXT,
            "capabilities": {"type": ["array", "null"], "items": {"type": "string"}},
        },
    },
    "ModelUpdate": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "name": {"type": ["string", "null"], "maxLength": 200},
            "description": _NULLABLE_TEXT,
            "capabilities": {"type": ["array", "null"], "items": {"type": "string"}},
        },
    },
    "Model": {"type": "object", "required": ["id"]},
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {"object": {"const": "list"}, "data": {"type": "array"}},
    },
    "LinkInput": {
        "type": "object",
        "additionalProperties": False,
        "required": ["model_id"],
        "properties": {
            "model_id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,199}$"},
            "is_default": {"type": "boolean"},
            "upstream_model": {"type": ["string", "null"], "maxLength": 200},
            "input_cost_per_1k": {"type": ["number", "null"], "minimum": 0, "maximum": 1e9},
            "output_cost_per_1k": {"type": ["number", "null"], "minimum": 0, "maximum": 1e9},
            "currency": {"type": ["string", "null"], "maxLength": 8},
        },
    },
    "Link": {"type": "object", "required": ["provider_id", "model_id", "is_default"]},
    "List": {"type": "object", "required": ["data", "next_cursor"]},
    "Request": {"type": "object", "required": ["id", "created_at", "status"]},
    "Stats": {"type": "object", "required": ["group_by", "since", "until", "data"]},
    "Timeseries": {
        "type": "object",
        "required": [
            "group_by",
            "since",
            "until",
            "bucket_ms",
            "buckets",
            "totals",
            "series",
            "groups",
        ],
    },
    "Reloaded": {"type": "object", "required": ["id", "reloaded", "config_version"]},
    "KeyInput": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {
            "name": _TEXT,
            "rpm_limit": {"type": ["integer", "null"], "minimum": 1, "maximum": 2**53},
            "tpm_limit": {"type": ["integer", "null"], "minimum": 1, "maximum": 2**53},
            "models": {"type": ["array", "null"], "items": {"type": "string"}},
            "expires_at": {"type": ["integer", "null"], "minimum": 1, "maximum": 2**53},
        },
    },
    "Key": {"type": "object", "required": ["id", "name", "prefix"]},
    # resilience (docs/routing.md)
    "ProviderState": {"type": "object", "required": ["id", "circuit", "usage"]},
    # the Messages door (docs/claude-code.md): the fields it checks; any other field passes on
    "MessagesRequest": {
        "type": "object",
        "required": ["model", "max_tokens", "messages"],
        "properties": {
            "model": {"type": "string", "minLength": 1, "description": "A gateway model id"},
            "max_tokens": {"type": "integer", "minimum": 1},
            "messages": {"type": "array", "minItems": 1, "items": {"type": "object"}},
            "system": {"type": ["string", "array"]},
            "stream": {"type": "boolean"},
        },
        "additionalProperties": True,
    },
    "Message": {
        "type": "object",
        "required": ["id", "type", "role", "content", "model", "stop_reason", "usage"],
        "properties": {
            "type": {"const": "message"},
            "role": {"const": "assistant"},
            "content": {"type": "array", "items": {"type": "object"}},
            "stop_reason": {"type": ["string", "null"]},
            "stop_sequence": {"type": ["string", "null"]},
            "usage": {"type": "object", "required": ["input_tokens", "output_tokens"]},
        },
    },
    "CountTokensRequest": {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": {"type": "string", "minLength": 1},
            "messages": {"type": "array", "minItems": 1, "items": {"type": "object"}},
        },
        "additionalProperties": True,
    },
    "TokenCount": {
        "type": "object",
        "required": ["input_tokens"],
        "properties": {"input_tokens": {"type": "integer", "minimum": 0}},
    },
    # the Responses door and stored responses (docs/codex.md)
    "ResponsesRequest": {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": {"type": "string", "minLength": 1, "description": "A gateway model id"},
            "input": {"type": ["string", "array"]},
            "instructions": {"type": "string"},
            "previous_response_id": {"type": "string", "minLength": 1},
            "store": {"type": "boolean"},
            "stream": {"type": "boolean"},
        },
        "additionalProperties": True,
    },
    "Response": {
        "type": "object",
        "required": ["id", "object", "status", "output"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "response"},
            "status": {"type": "string"},
            "output": {"type": "array", "items": {"type": "object"}},
            "usage": {"type": ["object", "null"]},
        },
    },
    "ResponseDeleted": {
        "type": "object",
        "required": ["id", "object", "deleted"],
        "properties": {"deleted": {"const": True}},
    },
    "InputItemList": {
        "type": "object",
        "required": ["object", "data", "first_id", "last_id", "has_more"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": {"type": "object"}},
            "has_more": {"type": "boolean"},
        },
    },
    "AnthropicError": {
        "type": "object",
        "required": ["type", "error"],
        "properties": {
            "type": {"const": "error"},
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


def _path(*names: str) -> list[dict[str, Any]]:
    return [
        {"name": n, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for n in names
    ]


def _op(
    summary: str,
    ok: str,
    status: int = 200,
    *,
    body: str | None = None,
    params: list[dict[str, Any]] | None = None,
    public: bool = False,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {
            str(status): {"description": "Success", "content": {JSON: {"schema": _ref(ok)}}},
            "default": {"description": "An error", "content": {JSON: {"schema": _ref("Error")}}},
        },
    }
    if params:
        operation["parameters"] = params
    if body:
        operation["requestBody"] = {"required": True, "content": {JSON: {"schema": _ref(body)}}}
    if public:
        operation["security"] = []
    return operation


def _door(summary: str, body: str, ok: str, *, stream: bool = False) -> dict[str, Any]:
    """A Messages door operation: Anthropic's shapes, a client key or the admin token."""
    answer: dict[str, Any] = {JSON: {"schema": _ref(ok)}}
    if stream:
        answer["text/event-stream"] = {"schema": {"type": "string"}}
    return {
        "summary": summary,
        "tags": ["messages"],
        "security": [{"admin": []}, {"apiKey": []}, {}],
        "requestBody": {"required": True, "content": {JSON: {"schema": _ref(body)}}},
        "responses": {
            "200": {"description": "Success", "content": answer},
            "default": {
                "description": "An error in Anthropic's shape",
                "content": {JSON: {"schema": _ref("AnthropicError")}},
            },
        },
    }


def _stored(summary: str, ok: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    """A stored-response operation: the client key that made it, or the admin token."""
    operation = _op(summary, ok, params=params)
    operation["tags"] = ["responses"]
    operation["security"] = [{"admin": []}, {"apiKey": []}, {}]
    return operation


def _upgrade_refused() -> dict[str, Any]:
    error = {"content": {JSON: {"schema": _ref("Error")}}}
    return {
        "summary": "Not a Responses call: 426 to a WebSocket upgrade (Codex then uses HTTP), "
        "else 405",
        "tags": ["responses"],
        "security": [{"admin": []}, {"apiKey": []}, {}],
        "responses": {
            "405": {"description": "Use POST", **error},
            "426": {"description": "WebSocket mode is not supported", **error},
        },
    }


_FLAG = {"type": "string", "enum": ["true", "false"]}
PROVIDER = _path("provider_id")
LINK = _path("provider_id", "model_id")
KEY = _path("provider_id", "key")
MODEL = _path("model_id")

PATHS: dict[str, dict[str, Any]] = {
    "/v1/providers": {
        "get": _op(
            "List providers, highest priority first",
            "ProviderList",
            params=[
                _query("type", {"type": "string"}),
                _query("enabled", _FLAG),
                _query("archived", _FLAG),
                _query("limit", {"type": "string", "pattern": "^[0-9]{1,4}$"}),
                _query("cursor", {"type": "string"}),
            ],
        ),
        "post": _op("Create a provider", "Provider", 201, body="ProviderInput"),
    },
    "/v1/providers/{provider_id}": {
        "get": _op("A provider with masked config, links and state", "Provider", params=PROVIDER),
        "put": _op("Partial update", "Provider", body="ProviderUpdate", params=PROVIDER),
        "delete": _op("Delete, or archive when it has history", "Deleted", params=PROVIDER),
    },
    "/v1/providers/{provider_id}/enable": {"post": _op("Enable", "Provider", params=PROVIDER)},
    "/v1/providers/{provider_id}/disable": {"post": _op("Disable", "Provider", params=PROVIDER)},
    "/v1/providers/{provider_id}/test": {
        "post": _op("One real call to the upstream", "Probe", params=PROVIDER)
    },
    "/v1/providers/{provider_id}/reload": {
        "post": _op("Fresh adapter in this process", "Reloaded", params=PROVIDER)
    },
    "/v1/providers/{provider_id}/restore": {
        "post": _op("Bring an archived provider back", "Provider", params=PROVIDER)
    },
    "/v1/providers/{provider_id}/config": {
        "get": _op("Masked config", "Config", params=PROVIDER),
        "put": _op("Replace the config", "Config", body="ConfigInput", params=PROVIDER),
    },
    "/v1/providers/{provider_id}/config/{key}": {
        "patch": _op("Set one key", "Config", body="ConfigValue", params=KEY),
        "delete": _op("Remove one key", "Config", params=KEY),
    },
    "/v1/providers/{provider_id}/models": {
        "get": _op("Linked models", "List", params=PROVIDER),
        "post": _op(
            "Link a model (created if missing)", "Link", 201, body="LinkInput", params=PROVIDER
        ),
    },
    "/v1/providers/{provider_id}/models/{model_id}": {
        "delete": _op("Unlink a model", "Link", params=LINK),
    },
    "/v1/providers/{provider_id}/models/{model_id}/default": {
        "put": _op("Make it the provider's default model", "List", params=LINK),
    },
    "/v1/models": {
        "get": _op("Models clients can ask for (OpenAI's list shape)", "ModelList", public=True),
        "post": _op("Create a model", "Model", 201, body="ModelInput"),
    },
    "/v1/models/{model_id}": {
        "get": _op(
            "A model: the management detail for the admin token; for a client (any key, like"
            " chat completions) OpenAI's model object (id, object, created, owned_by)",
            "Model",
            params=MODEL,
            public=True,
        ),
        "put": _op("Partial update", "Model", body="ModelUpdate", params=MODEL),
        "delete": _op("Delete, or archive when requests name it", "Deleted", params=MODEL),
    },
    "/v1/models/{model_id}/restore": {
        "post": _op("Bring an archived model back", "Model", params=MODEL)
    },
    "/v1/requests": {
        "get": _op(
            "Request history, newest first, cursor-paginated",
            "List",
            params=[
                _query("limit", {"type": "string", "pattern": "^[0-9]{1,4}$"}),
                _query("cursor", {"type": "string"}),
                _query("model", {"type": "string"}),
                _query("provider_id", {"type": "string"}),
                _query("tried_provider_id", {"type": "string"}),
                _query(
                    "status",
                    {"type": "string", "enum": ["success", "error", "client_closed"]},
                ),
                _query("since", _MS),
                _query("until", _MS),
                _query("client_key_id", {"type": "string"}),
                _query("endpoint", {"type": "string"}),
            ],
        )
    },
    "/v1/auth-failures": {
        "get": _op(
            "Refused client keys per minute, source address and key prefix, newest first",
            "List",
            params=[
                _query("limit", {"type": "string", "pattern": "^[0-9]{1,4}$"}),
                _query("cursor", {"type": "string"}),
                _query("since", _MS),
                _query("until", _MS),
                _query("source", {"type": "string"}),
                _query("key_prefix", {"type": "string"}),
            ],
        )
    },
    "/v1/requests/{request_id}": {
        "get": _op("One request with its attempts", "Request", params=_path("request_id"))
    },
    "/v1/keys": {
        "get": _op(
            "Client keys (never the key itself)",
            "List",
            params=[
                _query("limit", {"type": "string", "pattern": "^[0-9]{1,4}$"}),
                _query("cursor", {"type": "string"}),
            ],
        ),
        "post": _op(
            "Create a client key; the key is shown only in this answer", "Key", 201, body="KeyInput"
        ),
    },
    "/v1/keys/{key_id}": {
        "get": _op("One client key", "Key", params=_path("key_id")),
        "delete": _op("Revoke a client key", "Key", params=_path("key_id")),
    },
    "/v1/health/providers": {
        "get": _op("Circuit, rate-limit use and last health check per provider", "List")
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics (the admin token or metrics.token as a bearer token)",
            "responses": {
                "200": {
                    "description": "The Prometheus text format (or OpenMetrics, if accepted)",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                "default": {
                    "description": "An error",
                    "content": {JSON: {"schema": _ref("Error")}},
                },
            },
        }
    },
    "/v1/providers/{provider_id}/reset": {
        "post": _op("Close the provider's circuit now", "ProviderState", params=PROVIDER)
    },
    "/v1/messages": {
        "post": _door(
            "Anthropic's Messages API, routed like a chat completion (SSE with stream: true)",
            "MessagesRequest",
            "Message",
            stream=True,
        )
    },
    "/v1/messages/count_tokens": {
        "post": _door(
            "Input tokens of a Messages request: counted by the provider, or estimated",
            "CountTokensRequest",
            "TokenCount",
        )
    },
    "/v1/responses": {
        "post": {
            **_door(
                "OpenAI's Responses API, routed like a chat completion (SSE with stream: true)",
                "ResponsesRequest",
                "Response",
                stream=True,
            ),
            "tags": ["responses"],
            "responses": {
                "200": {
                    "description": "Success",
                    "content": {
                        JSON: {"schema": _ref("Response")},
                        "text/event-stream": {"schema": {"type": "string"}},
                    },
                },
                "default": {
                    "description": "An error",
                    "content": {JSON: {"schema": _ref("Error")}},
                },
            },
        },
        "get": _upgrade_refused(),
    },
    "/responses": {"get": _upgrade_refused()},
    "/v1/responses/{response_id}": {
        "get": _stored("A stored response", "Response", _path("response_id")),
        "delete": _stored("Delete a stored response", "ResponseDeleted", _path("response_id")),
    },
    "/v1/responses/{response_id}/input_items": {
        "get": _stored(
            "The input items a stored response was given (OpenAI's list paging)",
            "InputItemList",
            [
                *_path("response_id"),
                _query("limit", {"type": "string", "pattern": "^[0-9]{1,3}$"}),
                _query("order", {"type": "string", "enum": ["asc", "desc"]}),
                _query("after", {"type": "string"}),
                _query("before", {"type": "string"}),
            ],
        )
    },
    "/v1/stats": {
        "get": _op(
            "Requests, errors, tokens, cost and p50/p95 latency per group",
            "Stats",
            params=[
                _query("since", _MS),
                _query("until", _MS),
                _query("group_by", {"type": "string", "enum": ["provider", "model"]}),
            ],
        )
    },
    "/v1/stats/timeseries": {
        "get": _op(
            "Requests, errors, p50/p95 latency, tokens and cost per time bucket and group",
            "Timeseries",
            params=[
                _query("since", _MS),
                _query("until", _MS),
                _query("bucket_ms", _MS),
                _query("group_by", {"type": "string", "enum": ["provider", "model"]}),
            ],
        )
    },
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "provider-router management API", "version": "1"},
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "admin": {"type": "http", "scheme": "bearer"},
                # The same token (admin token or, on the Messages door, a client key) as a header.
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
        "security": [{"admin": []}, {"apiKey": []}],
    }


async def openapi(request: Request) -> Response:
    return json_response(document())


routes = [Route("/openapi.json", openapi, methods=["GET"])]
