"""What the services' OpenAPI 3.1 documents share: the error answer every refusal has (the
`Error` schema: status and message) and the envelope, with the hub token as the one way in."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

ERROR_RESPONSE = {
    "description": "Refused, with the reason",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}


def error_responses(codes: Iterable[int]) -> dict[str, Any]:
    """The `responses` entries of these refusal codes."""
    return {str(code): ERROR_RESPONSE for code in codes}


def document(
    info: Mapping[str, Any], schemas: Mapping[str, Any], paths: Mapping[str, Any], **more: Any
) -> dict[str, Any]:
    """A service's whole document; `more` adds top-level fields (such as `servers`)."""
    return {
        "openapi": "3.1.0",
        "info": dict(info),
        **more,
        "components": {
            "schemas": dict(schemas),
            "securitySchemes": {
                "token": {"type": "apiKey", "in": "header", "name": "Authorization"}
            },
        },
        "security": [{"token": []}],
        "paths": dict(paths),
    }
