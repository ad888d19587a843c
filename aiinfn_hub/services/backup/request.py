"""The backup service's request bodies: strict models (unknown fields refused, sizes bounded).
What the values mean is checked by `access` and `paths`, in the one path the page, the CLI and
the REST API share; these models only give the body its shape."""

from __future__ import annotations

from typing import Any, Literal

import pydantic

from ...errors import UserError
from . import paths

MAX_BODY_BYTES = 16 * 1024
Kind = Literal["home", "project"]


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True, frozen=True)


class BackupRequest(_Strict):
    """Back up a home (`name`: its user) or a project folder (`name`: the project) now."""

    kind: Kind
    name: str = pydantic.Field(min_length=1, max_length=256)


class RestoreRequest(_Strict):
    """Restore `path` ("" for everything) of `archive` from a repository. Users' restores go to
    ~/restored/<archive>/; only admins name a `folder` (inside the repository's own volume)."""

    kind: Kind
    name: str = pydantic.Field(min_length=1, max_length=256)
    archive: str = pydantic.Field(min_length=1, max_length=paths.MAX_ARCHIVE_NAME)
    path: str = pydantic.Field(default="", max_length=paths.MAX_PATH_LENGTH)
    folder: str | None = pydantic.Field(default=None, max_length=paths.MAX_PATH_LENGTH)


def parse(model: type[_Strict], body: bytes) -> Any:
    """Validate a JSON body into `model`; a 400 (413 when too large) naming the fields and
    rules, never the values sent."""
    if len(body) > MAX_BODY_BYTES:
        raise UserError(f"the request body is larger than {MAX_BODY_BYTES // 1024} KiB", status=413)
    try:
        return model.model_validate_json(body or b"{}")
    except pydantic.ValidationError as error:
        problems = [
            f"{'.'.join(str(part) for part in e['loc']) or 'body'}: {e['msg']}"
            for e in error.errors(include_input=False, include_url=False)
        ]
        raise UserError(
            "invalid request: " + "; ".join(problems[:5]), reason="invalid-request"
        ) from None
