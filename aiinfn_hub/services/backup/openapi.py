"""The OpenAPI 3.1 document of the backup service's REST API; request schemas from the models."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from ..openapi import document as service_document
from ..openapi import error_responses
from .operations import RUN_NAME
from .request import BackupRequest, RestoreRequest

_ERRORS = error_responses((400, 401, 403, 404, 409, 413, 429, 502, 503, 504))
_REPOSITORY = [
    {"name": "kind", "in": "path", "required": True, "schema": {"enum": ["home", "project"]}},
    {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "The home's user or the project's name.",
    },
]
_ARCHIVE = {
    "name": "archive",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._+-]*$", "maxLength": 128},
}
_RUN_ID = {
    "name": "run_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": f"^{RUN_NAME.pattern}$"},
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_TIME = {"type": ["string", "null"], "format": "date-time"}
_BYTES = {"type": ["integer", "null"], "description": "Bytes; null before a success."}
_RECORD = {
    "type": "object",
    "description": "One repository as the scheduler last recorded it (times UTC).",
    "properties": {
        "key": {"type": "string"},
        "kind": {"enum": ["home", "project", ""]},
        "name": {"type": "string"},
        "last_attempt": _TIME,
        "attempts": {"type": "integer", "description": "Failures in the last attempt's day."},
        "last_success": _TIME,
        "last_failure": _TIME,
        "last_error": {"type": "string", "description": "Why the last failure failed."},
        "last_outcome": {
            "enum": [
                "",
                "archived",
                "archived with warnings",
                "nothing to back up: folder missing",
                "failed",
            ],
            "description": "How the last backup ended.",
        },
        "last_warning": {
            "type": "string",
            "description": "borg's warnings (exit 1) in the last backup: what the archive lacks.",
        },
        "archives": {"type": ["integer", "null"]},
        "last_archive_size": _BYTES,
        "last_archive_added": _BYTES,
        "original_size": _BYTES,
        "stored_size": _BYTES,
        "dedup_ratio": {"type": ["number", "null"]},
        "last_check": _TIME,
        "last_check_ok": {"type": ["boolean", "null"]},
    },
}
_SCHEMAS: dict[str, Any] = {
    "Record": _RECORD,
    "Archive": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "Its run's UTC start time."},
            "time": {"type": "string", "format": "date-time"},
            "files": {"type": "integer"},
            "original_size": {"type": "integer", "description": "Bytes of the files it holds."},
            "compressed_size": {"type": "integer", "description": "The same, compressed."},
            "deduplicated_size": {
                "type": "integer",
                "description": "Bytes stored for this archive alone (compressed, in no other).",
            },
        },
    },
    "Entry": {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "Relative to the home or project folder."},
            "type": {"enum": ["file", "folder", "symlink", "other"]},
            "mode": {"type": "string", "description": "As ls -l shows it."},
            "size": {"type": "integer"},
            "mtime": {"type": "string", "format": "date-time"},
            "link_target": {"type": "string", "description": "Symlinks only; never followed."},
        },
    },
    "Run": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "kind": {"enum": ["backup", "restore"]},
            "archive": {"type": "string"},
            "path": {"type": "string"},
            "destination": {"type": "string", "description": "Restores: where it writes."},
            "state": {
                "enum": ["running", "succeeded", "failed", "refused"],
                "description": "refused: the restore's destination existed; nothing was written.",
            },
            "status": {"type": "integer", "description": "409 when refused."},
            "message": {"type": "string"},
        },
    },
    "Error": {
        "type": "object",
        "properties": {"status": {"type": "integer"}, "message": {"type": "string"}},
    },
}
_PATHS: dict[str, Any] = {
    "/api/repositories/{kind}/{name}/archives": {
        "parameters": _REPOSITORY,
        "get": {
            "summary": "The repository's archives, newest first (none before its first backup)",
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {"archives": {"type": "array", "items": _ref("Archive")}},
                    },
                    "Archives",
                ),
                **_ERRORS,
            },
        },
    },
    "/api/repositories/{kind}/{name}/archives/{archive}/paths": {
        "parameters": [*_REPOSITORY, _ARCHIVE],
        "get": {
            "summary": "The entries directly inside a folder of the archive",
            "parameters": [
                {"name": "folder", "in": "query", "schema": {"type": "string", "default": ""}}
            ],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {"entries": {"type": "array", "items": _ref("Entry")}},
                    },
                    "Entries",
                ),
                **_ERRORS,
            },
        },
    },
    "/api/restores": {
        "post": {
            "summary": "Restore a file or folder into ~/restored/<archive>/ (never overwriting)",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("RestoreRequest")}},
            },
            "responses": {"202": _json(_ref("Run"), "Started"), **_ERRORS},
        }
    },
    "/api/backups": {
        "post": {
            "summary": "Back up a home or project folder now (one run at a time per repository)",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("BackupRequest")}},
            },
            "responses": {"202": _json(_ref("Run"), "Started"), **_ERRORS},
        }
    },
    "/api/runs/{run_id}": {
        "parameters": [_RUN_ID],
        "get": {
            "summary": "A backup's or restore's state",
            "responses": {"200": _json(_ref("Run"), "The run"), **_ERRORS},
        },
    },
    "/api/records": {
        "get": {
            "summary": "Every repository's backup record (admins only)",
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {"repositories": {"type": "array", "items": _ref("Record")}},
                    },
                    "The records, by key",
                ),
                **_ERRORS,
            },
        },
    },
}
_INFO = {
    "title": "aiinfn-hub backup service",
    "version": "1",
    "description": "Your backups: list archives, browse them, restore files into "
    "~/restored/<archive>/ in your home. Authenticate with a JupyterHub token that may "
    "access this service (Authorization: token ...). Unknown fields are refused.",
}


@lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    """The document, built once."""
    schemas = {
        **_SCHEMAS,
        "BackupRequest": BackupRequest.model_json_schema(),
        "RestoreRequest": RestoreRequest.model_json_schema(),
    }
    return service_document(_INFO, schemas, _PATHS)
