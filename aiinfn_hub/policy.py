"""Per-group rules as data: what a user may choose and how much they may hold. Pure.

Admins write one entry per group (`AiInfnPlatform.group_policies`, a dict keyed by group name,
which z2jh merges) plus `default_policy` for everyone. A user in several groups gets the union:
every accelerator and environment any of their groups allows, the largest caps, and the
reserved nodes of each of their groups. Every denial carries a reason the user can read.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, WithJsonSchema, field_validator

from .admin_files import (
    Quantity,
    StrictModel,
    location,
    must_be,
    problems,
    quantity,
    schema_text,
    whole_number,
)
from .catalog import Catalog

ANY = "*"


class PolicyError(ValueError):
    """A policy entry is invalid; one line per problem: the group, the field, what is allowed."""


Units = Annotated[int, *whole_number(0, 64)]
# The schema said outright: pydantic 2.7 and later versions write a one-value Literal apart.
Keys = Annotated[
    Literal["*"] | tuple[str, ...],
    must_be("'*' or a list of catalog keys"),
    WithJsonSchema(
        {
            "anyOf": [
                {"const": ANY, "type": "string"},
                {"type": "array", "items": {"type": "string"}},
            ]
        }
    ),
]


class PolicyEntry(StrictModel):
    """The rules of one group (`AiInfnPlatform.group_policies`) or of everyone (`default_policy`).
    A user gets the default united with every group they are in."""

    accelerators: Keys = Field((), description="Catalog accelerator keys it may use, or '*'.")
    environments: Keys = Field((), description="Catalog environment keys it may use, or '*'.")
    custom_images: Annotated[bool, Field(strict=True), must_be("true or false")] = Field(
        False, description="Whether its members may type in an image (catalog: custom_images)."
    )
    max_accelerators: Units = Field(
        0, description="Accelerator units held at once over all of a user's servers."
    )
    max_cpu: Quantity | None = Field(
        None, description="Largest CPU of one server (absent: no cap)."
    )
    max_memory: Quantity | None = Field(
        None, description="Largest memory of one server (absent: no cap)."
    )

    @field_validator("accelerators", "environments")
    @classmethod
    def _in_catalog(cls, value: Any, info: ValidationInfo) -> Any:
        catalog = (info.context or {}).get("catalog")
        if catalog is None or value == ANY:
            return value
        known = getattr(catalog, str(info.field_name))
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(
                f"not in the catalog: {', '.join(unknown)} (allowed: '*' or {', '.join(known)})"
            )
        return value


@dataclass(frozen=True)
class Rules:
    """The rules of one group, or of one user after the union of their groups.

    `accelerators`/`environments` are keys allowed (None: every key in the catalog).
    `max_accelerators` counts accelerator units held at once over all of a user's servers;
    `max_cpu`/`max_memory` cap one server's size (infinite when the entry does not set them).
    """

    accelerators: frozenset[str] | None
    environments: frozenset[str] | None
    custom_images: bool
    max_accelerators: int
    max_cpu: float
    max_memory: float

    def allows_accelerator(self, key: str) -> bool:
        return self.accelerators is None or key in self.accelerators

    def allows_environment(self, key: str) -> bool:
        return self.environments is None or key in self.environments


@dataclass(frozen=True)
class UserPolicy:
    """What one user may do: the union of their groups' rules, and the groups whose reserved
    nodes they may use."""

    rules: Rules
    groups: frozenset[str]


def parse_rules(entry: Mapping[str, Any], catalog: Catalog, where: str) -> Rules:
    """Validate one policy entry against the catalog; errors start with `where`."""
    try:
        checked = PolicyEntry.model_validate(entry, context={"catalog": catalog})
    except ValidationError as error:
        raise PolicyError(
            "\n".join(f"{location(loc, where)}: {message}" for loc, message in problems(error))
        ) from None
    return Rules(
        accelerators=None if checked.accelerators == ANY else frozenset(checked.accelerators),
        environments=None if checked.environments == ANY else frozenset(checked.environments),
        custom_images=checked.custom_images,
        max_accelerators=checked.max_accelerators,
        max_cpu=float("inf") if checked.max_cpu is None else quantity(checked.max_cpu),
        max_memory=float("inf") if checked.max_memory is None else quantity(checked.max_memory),
    )


def parse_policies(group_policies: Mapping[str, Any], catalog: Catalog) -> dict[str, Rules]:
    """Validate every group's entry; raises PolicyError naming every bad one, a line each."""
    rules, errors = {}, []
    for group, entry in group_policies.items():
        try:
            rules[group] = parse_rules(entry, catalog, f"group_policies.{group}")
        except PolicyError as error:
            errors.append(str(error))
    if errors:
        raise PolicyError("\n".join(errors))
    return rules


def _union_keys(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    return None if a is None or b is None else a | b


def union(first: Rules, second: Rules) -> Rules:
    return Rules(
        accelerators=_union_keys(first.accelerators, second.accelerators),
        environments=_union_keys(first.environments, second.environments),
        custom_images=first.custom_images or second.custom_images,
        max_accelerators=max(first.max_accelerators, second.max_accelerators),
        max_cpu=max(first.max_cpu, second.max_cpu),
        max_memory=max(first.max_memory, second.max_memory),
    )


def for_user(
    default: Rules, group_rules: Mapping[str, Rules], groups: Collection[str]
) -> UserPolicy:
    """The default rules united with the rules of every group the user is in."""
    rules = default
    for group in sorted(groups):
        if group in group_rules:
            rules = union(rules, group_rules[group])
    return UserPolicy(rules=rules, groups=frozenset(groups))


def accelerator_denial(policy: UserPolicy, key: str, count: int, held: int) -> str | None:
    """Why this user may not take `count` units of accelerator `key` now, or None if they may.

    `held` is how many accelerator units their other running servers hold."""
    if not policy.rules.allows_accelerator(key):
        return "not available to your groups"
    if count and held + count > policy.rules.max_accelerators:
        limit = policy.rules.max_accelerators
        return (
            f"over your limit of {limit} accelerator{'s' if limit != 1 else ''}: "
            f"you hold {held} and asked for {count}"
        )
    return None


def schema() -> str:
    """docs/policy.schema.json: the JSON Schema of one policy entry, for admins' editors."""
    return schema_text(PolicyEntry, "aiinfn-hub policy entry (default_policy, group_policies.*)")


if __name__ == "__main__":
    if sys.argv[1:] != ["--schema"]:
        sys.exit("usage: python -m aiinfn_hub.policy --schema > docs/policy.schema.json")
    sys.stdout.write(schema())
