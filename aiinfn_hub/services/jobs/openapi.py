"""The OpenAPI 3.1 document of the job service's REST API; request schemas come from the models."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import BaseModel

from ..openapi import document as service_document
from ..openapi import error_responses
from .request import CloneRequest, JobRequest, ResubmitRequest

_JOB = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}}
_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^job-[0-9a-f]{20}$"},
}
_ERRORS = error_responses((400, 401, 403, 404, 409, 413, 422, 429, 503))


def _body(name: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
    }


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema(ref_template="#/components/schemas/{model}")


_JOB_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "The Job's name; use it in the other calls."},
        "name": {"type": "string"},
        "owner": {"type": "string"},
        "kind": {"enum": ["batch", "bunshin"]},
        "project": {"type": "string"},
        "queue": {"type": "string", "description": "The project's Kueue LocalQueue."},
        "priority": {"type": ["string", "null"]},
        "offload": {
            "enum": ["never", "may", "only"],
            "description": "Where it may run: local nodes, local first then a remote site, "
            "or a remote site only.",
        },
        "offloadable": {"type": "boolean", "description": "offload is may or only."},
        "confidential": {
            "type": "boolean",
            "description": "Asked to stay on local nodes (offload 'may' is then ignored).",
        },
        "sites": {
            "type": ["array", "null"],
            "items": {"type": "string"},
            "description": "For an offloadable job, the remote sites whose policy accepts it; "
            "empty: none does, and a job that may be offloaded runs locally.",
        },
        "accelerator": {"type": ["string", "null"]},
        "state": {
            "enum": [
                "queued",
                "requeued",
                "preempted",
                "admitted",
                "starting",
                "running",
                "succeeded",
                "failed",
                "cancelled",
            ]
        },
        "created": {"type": ["string", "null"], "format": "date-time"},
        "started": {"type": ["string", "null"], "format": "date-time"},
        "finished": {"type": ["string", "null"], "format": "date-time"},
        "completions": {"type": "integer"},
        "succeeded": {"type": "integer"},
        "failed": {"type": "integer"},
        "active": {"type": "integer"},
        "admission": {
            "type": ["object", "null"],
            "description": "Kueue's admission: cluster_queue and the "
            "flavor chosen for each resource.",
        },
        "site": {
            "type": ["string", "null"],
            "description": "Where Kueue sent it: 'local', or the remote site (its "
            "virtual-node.interlink/site label); null while not admitted.",
        },
        "position": {
            "type": ["integer", "null"],
            "description": "Place in the project's queue while waiting.",
        },
        "message": {
            "type": ["string", "null"],
            "description": "Kueue's reason while the job waits.",
        },
        "pods": {"type": "array", "items": {"type": "object"}, "description": "Status calls only."},
    },
}


_CREATED = {
    "201": {"description": "Created", **_JOB},
    "200": {"description": "Already submitted with this idempotency key", **_JOB},
    **_ERRORS,
}
_JOB_LIST = {
    "description": "Jobs",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}}
                },
            }
        }
    },
}
_LOG_PARAMETERS = [
    {"name": "index", "in": "query", "schema": {"type": "integer", "minimum": 0}},
    {"name": "tail", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 5000}},
]

# The routes (handlers.py); request bodies refer to the schemas document() builds from the models.
_PATHS = {
    "/api/jobs": {
        "get": {
            "summary": "Your jobs, newest first (admins: ?all=1 for everyone's)",
            "parameters": [{"name": "all", "in": "query", "schema": {"enum": ["0", "1"]}}],
            "responses": {"200": _JOB_LIST, **_ERRORS},
        },
        "post": {
            "summary": "Submit a batch job",
            "requestBody": _body("JobRequest"),
            "responses": _CREATED,
        },
    },
    "/api/clones": {
        "post": {
            "summary": "Clone your running notebook server with another command (Bunshin)",
            "requestBody": _body("CloneRequest"),
            "responses": _CREATED,
        },
    },
    "/api/jobs/{job_id}": {
        "parameters": [_ID],
        "get": {
            "summary": "Status: state, Kueue admission or queue position, pods",
            "responses": {"200": {"description": "The job", **_JOB}, **_ERRORS},
        },
        "delete": {
            "summary": "Cancel: delete the job and its pods",
            "responses": {"200": {"description": "Cancelled", **_JOB}, **_ERRORS},
        },
    },
    "/api/jobs/{job_id}/logs": {
        "parameters": [_ID],
        "get": {
            "summary": "The last lines of each pod's log",
            "parameters": _LOG_PARAMETERS,
            "responses": {"200": {"description": "Logs per pod"}, **_ERRORS},
        },
    },
    "/api/jobs/{job_id}/resubmit": {
        "parameters": [_ID],
        "post": {
            "summary": "Submit one of your jobs again, as it was asked for",
            "requestBody": {**_body("ResubmitRequest"), "required": False},
            "responses": {"201": {"description": "Created", **_JOB}, **_ERRORS},
        },
    },
}
_INFO = {
    "title": "aiinfn-hub job service",
    "version": "1",
    "description": "Batch jobs and Bunshin clones of your notebook, queued by Kueue in your "
    "project's queue. Authenticate with a JupyterHub token that may access this "
    "service (Authorization: token ...). Unknown fields are refused.",
}
_ERROR_SCHEMA = {
    "type": "object",
    "properties": {"status": {"type": "integer"}, "message": {"type": "string"}},
}


@lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    """The document, built once: the request schemas need the pydantic models' JSON schemas."""
    schemas = {
        "JobRequest": _schema(JobRequest),
        "CloneRequest": _schema(CloneRequest),
        "ResubmitRequest": _schema(ResubmitRequest),
        "Job": _JOB_SCHEMA,
        "Error": _ERROR_SCHEMA,
    }
    return service_document(_INFO, schemas, _PATHS)
