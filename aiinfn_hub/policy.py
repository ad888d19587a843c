"""Per-group rules as data: what a user may choose and how much they may hold. Pure.

Admins write one entry per group (`AiInfnSpawner.group_policies`, a dict keyed by group name,
which z2jh merges) plus `default_policy` for everyone. A user in several groups gets the union:
every accelerator and environment any of their groups allows, the largest caps, and the
reserved nodes of each of their groups. Every denial carries a reason the user can read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Collection, Mapping

from .catalog import QUANTITY_PATTERN, Catalog, quantity

ANY = "*"
POLICY_FIELDS = {"accelerators", "environments", "custom_images", "max_accelerators", "max_cpu", "max_memory"}


class PolicyError(ValueError):
    """A policy entry is invalid; the message names the group and the field."""


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


def _keys(value: Any, known: Collection[str], where: str) -> frozenset[str] | None:
    if value == ANY:
        return None
    if not isinstance(value, list) or any(not isinstance(v, str) for v in value):
        raise PolicyError(f"{where}: must be {ANY!r} or a list of catalog keys")
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise PolicyError(f"{where}: not in the catalog: {', '.join(unknown)}")
    return frozenset(value)


def parse_rules(entry: Mapping[str, Any], catalog: Catalog, where: str) -> Rules:
    """Validate one policy entry against the catalog."""
    if not isinstance(entry, Mapping):
        raise PolicyError(f"{where}: must be a mapping")
    unknown = set(entry) - POLICY_FIELDS
    if unknown:
        raise PolicyError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    max_accelerators = entry.get("max_accelerators", 0)
    if not isinstance(max_accelerators, int) or isinstance(max_accelerators, bool) or not 0 <= max_accelerators <= 64:
        raise PolicyError(f"{where}.max_accelerators: must be a whole number 0..64")
    caps = {}
    for field in ("max_cpu", "max_memory"):
        if field not in entry:
            caps[field] = float("inf")
            continue
        value = str(entry[field])
        if not QUANTITY_PATTERN.fullmatch(value):
            raise PolicyError(f"{where}.{field}: must be a Kubernetes quantity such as 16 or 64Gi")
        caps[field] = quantity(value)
    custom_images = entry.get("custom_images", False)
    if not isinstance(custom_images, bool):
        raise PolicyError(f"{where}.custom_images: must be true or false")
    return Rules(
        accelerators=_keys(entry.get("accelerators", []), catalog.accelerators, f"{where}.accelerators"),
        environments=_keys(entry.get("environments", []), catalog.environments, f"{where}.environments"),
        custom_images=custom_images,
        max_accelerators=max_accelerators,
        max_cpu=caps["max_cpu"],
        max_memory=caps["max_memory"],
    )


def parse_policies(group_policies: Mapping[str, Any], catalog: Catalog) -> dict[str, Rules]:
    """Validate every group's entry; raises PolicyError naming the first bad one."""
    return {group: parse_rules(entry, catalog, f"group_policies.{group}") for group, entry in group_policies.items()}


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


def for_user(default: Rules, group_rules: Mapping[str, Rules], groups: Collection[str]) -> UserPolicy:
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
        return (f"over your limit of {limit} accelerator{'s' if limit != 1 else ''}: "
                f"you hold {held} and asked for {count}")
    return None
