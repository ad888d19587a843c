"""The shape of the admins' YAML files (the catalog, the group policy): strict pydantic models
whose errors say, in the admin's words, where in the file and what is allowed, and the JSON
Schema published for editors. Pure."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    WrapValidator,
    model_validator,
)

from . import quantities

QUANTITY_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti)?$")
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def quantity(text: str) -> float:
    """A Kubernetes quantity of the forms the catalog accepts ("4", "500m", "16Gi") as a number."""
    if not QUANTITY_PATTERN.fullmatch(str(text)):
        raise ValueError(f"not a quantity: {text!r}")
    return float(quantities.parse(str(text)))


Problem = tuple[tuple[str | int, ...], str]
"""Where in a document (keys and list indexes) and what is wrong there."""


def must_be(rule: str, allowed: str = "") -> WrapValidator:
    """Say the admin's rule instead of pydantic's wording when a scalar check fails."""
    message = f"must be {rule}" + (f" (allowed: {allowed})" if allowed else "")

    def check(value: Any, handler: Any) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise ValueError(message) from None

    return WrapValidator(check)


# The rules below are metadata for Annotated, unpacked into it (`Annotated[int, *rules]`), so
# that each alias is written out as a type that mypy reads.
Rules = tuple[Any, ...]
"""Metadata for an `Annotated` type: pydantic constraints and a validator."""


def whole_number(low: int, high: int) -> Rules:
    """The rules of a whole number low..high: not a bool, a fraction or a string of digits."""
    return (Field(strict=True, ge=low, le=high), must_be(f"a whole number {low}..{high}"))


def nonempty_text(limit: int) -> Rules:
    return (
        Field(strict=True, min_length=1, max_length=limit, pattern=r"\S"),
        must_be(f"a non-empty string of at most {limit} characters"),
    )


def matching(pattern: re.Pattern[str], rule: str) -> Rules:
    return (Field(strict=True, pattern=pattern.pattern), must_be(rule))


def _quantity_text(value: Any) -> str:
    if (
        isinstance(value, bool)
        or not isinstance(value, (str, int))
        or not QUANTITY_PATTERN.fullmatch(str(value))
    ):
        raise ValueError("must be a Kubernetes quantity such as 4, 500m or 16Gi")
    return str(value)


Quantity = Annotated[
    str,
    PlainValidator(_quantity_text),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": QUANTITY_PATTERN.pattern},
                {"type": "integer", "minimum": 0},
            ]
        }
    ),
]
"""A Kubernetes quantity such as 4, 500m or 16Gi (a whole number may go unquoted); kept as text."""


class StrictModel(BaseModel):
    """A mapping in an admin's file: its unknown and missing fields are said in one line."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            raise ValueError("must be a mapping")
        fields = cls.model_fields
        unknown = sorted(str(key) for key in data if key not in fields)
        missing = [name for name, info in fields.items() if info.is_required() and name not in data]
        said = []
        if unknown:
            said.append(f"unknown field(s) {', '.join(unknown)} (allowed: {', '.join(fields)})")
        if missing:
            said.append(f"missing field(s) {', '.join(missing)}")
        if said:
            raise ValueError("; ".join(said))
        return data


_WORDING = {
    "dict_type": "must be a mapping",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "too_short": "must not be empty",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
}


def problems(error: ValidationError) -> list[Problem]:
    """pydantic's errors as (where, what), in the admin's words: the validators' ValueErrors as
    they are, pydantic's own reworded; a bad mapping key is placed at the key."""
    found: list[Problem] = []
    for detail in error.errors(include_url=False):
        if detail["type"] == "value_error":
            message = str(detail.get("ctx", {}).get("error", detail["msg"]))
        else:
            message = _WORDING.get(detail["type"], detail["msg"])
        found.append((tuple(part for part in detail["loc"] if part != "[key]"), message))
    return found


def location(loc: Sequence[str | int], start: str = "") -> str:
    """`accelerators.t4.counts[1]`: keys joined by dots, list indexes in brackets."""
    text = start
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def schema_text(model: type[BaseModel], title: str) -> str:
    """The JSON Schema of an admin file's model as published in docs/, for editors."""
    schema = {"$schema": JSON_SCHEMA_DIALECT, **model.model_json_schema(), "title": title}
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
