"""The OpenAPI 3.1 document of the usage service's REST API."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from ..openapi import document as service_document
from ..openapi import error_responses
from .query import NAME_LIMIT, PROJECT_LIMIT
from .report import CSV_COLUMNS

_ERRORS = error_responses((400, 401, 403, 429, 503))
_DATE = {"type": "string", "format": "date", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}


def _parameter(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def parameters(max_days: int) -> list[dict[str, Any]]:
    return [
        _parameter("start", _DATE, "First UTC day (default: 29 days before `end`)."),
        _parameter(
            "end", _DATE, f"Last UTC day, included (default: today). At most {max_days} days."
        ),
        _parameter(
            "user",
            {"type": "string", "minLength": 1, "maxLength": NAME_LIMIT},
            "Whose usage (default: yours). Another user's: admins only (else 403).",
        ),
        _parameter(
            "all", {"enum": ["0", "1"]}, "1: every user's usage (admins only; not with `user`)."
        ),
        _parameter(
            "project",
            {"type": "string", "minLength": 1, "maxLength": PROJECT_LIMIT},
            "Only the usage in this project (its catalog key).",
        ),
    ]


_FIGURES = {
    "accelerator_seconds": {
        "type": "integer",
        "description": "Accelerator units x seconds (GPU-seconds for a GPU model), exact.",
    },
    "accelerator_hours": {"type": "number", "description": "The same in hours, rounded."},
    "cpu_millicore_seconds": {
        "type": "integer",
        "description": "Requested CPU millicores x seconds, exact.",
    },
    "cpu_hours": {"type": "number", "description": "CPU core-hours, rounded."},
}
_KEY = {
    "user": {"type": "string"},
    "project": {"type": "string", "description": "Catalog key; '' for none (notebooks)."},
    "model": {"type": "string", "description": "Accelerator model; '' for CPU-only work."},
    "kind": {"enum": ["notebook", "batch", "offloaded"]},
    "site": {"type": "string", "description": "The remote site of offloaded work; else ''."},
}
_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "properties": {"status": {"type": "integer"}, "message": {"type": "string"}},
    },
    "Total": {"type": "object", "properties": {**_KEY, **_FIGURES}},
    "Daily": {
        "type": "object",
        "properties": {"day": {"type": "string", "format": "date"}, **_KEY, **_FIGURES},
    },
    "Quota": {
        "type": "object",
        "description": "What is left of a quota in its current period (UTC).",
        "properties": {
            "scope": {"enum": ["project", "user"]},
            "subject": {"type": "string"},
            "model": {"type": ["string", "null"], "description": "null: every accelerator."},
            "period": {"enum": ["day", "week", "month"]},
            "period_start": {"type": "string", "format": "date-time"},
            "period_end": {"type": "string", "format": "date-time"},
            "limit_hours": {"type": "number"},
            "used_hours": {"type": "number"},
            "remaining_hours": {"type": "number"},
        },
    },
    "Usage": {
        "type": "object",
        "properties": {
            "user": {"type": ["string", "null"], "description": "null with all=1."},
            "all": {"type": "boolean"},
            "project": {"type": ["string", "null"]},
            "start": {"type": "string", "format": "date"},
            "end": {"type": "string", "format": "date"},
            "days": {"type": "array", "items": {"type": "string", "format": "date"}},
            "time_zone": {"const": "UTC"},
            "as_of": {"type": "string", "format": "date-time"},
            "daily": {"type": "array", "items": {"$ref": "#/components/schemas/Daily"}},
            "totals": {"type": "array", "items": {"$ref": "#/components/schemas/Total"}},
            "quotas": {"type": "array", "items": {"$ref": "#/components/schemas/Quota"}},
        },
    },
}


def _usage_paths(max_days: int) -> dict[str, Any]:
    csv = {
        "description": "One line per day and (user, project, model, kind, site): "
        + ", ".join(CSV_COLUMNS),
        "content": {"text/csv": {"schema": {"type": "string"}}},
    }
    format_parameter = _parameter("format", {"enum": ["json", "csv"]}, "csv: as api/usage.csv.")
    return {
        "/api/usage": {
            "get": {
                "summary": "Accelerator and CPU hours per UTC day, totals, quotas left",
                "parameters": [*parameters(max_days), format_parameter],
                "responses": {
                    "200": {
                        "description": "The usage",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Usage"}},
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                    **_ERRORS,
                },
            }
        },
        "/api/usage.csv": {
            "get": {
                "summary": "The daily usage as CSV (a download)",
                "parameters": parameters(max_days),
                "responses": {"200": csv, **_ERRORS},
            }
        },
    }


_INFO = {
    "title": "aiinfn-hub usage service",
    "version": "1",
    "description": "GPU-hours and CPU-hours from the accounting ledger, to the second, "
    "with what is left of each quota. Authenticate with a hub token "
    "(Authorization: token ...). Users see their own usage; admins everyone's.",
}


@lru_cache(maxsize=4)
def document(max_days: int = 366) -> dict[str, Any]:
    paths = {
        "/api/": {
            "get": {
                "summary": "Who you are to the service, and where this document is",
                "responses": {"200": {"description": "The caller"}, **_ERRORS},
            }
        },
        **_usage_paths(max_days),
    }
    return service_document(_INFO, _SCHEMAS, paths, servers=[{"url": "/services/usage"}])
