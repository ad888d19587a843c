"""Catalog + inventory + policy -> the spawn page's profiles; user_options -> a SpawnPlan. Pure.

The form and the REST API share one path: the form's fields are first turned into the same
user_options dict a script would POST (`options_from_form`), then `resolve` validates it
against the catalog and the user's policy. Anything outside them is a UserError (HTTP 400).

user_options: {"accelerator": key, "count": int, "environment": key | "image": custom image,
"size": key}; every field is optional and defaults to the catalog's defaults.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .catalog import Accelerator, Catalog, Environment, Size, quantity
from .errors import UserError
from .policy import UserPolicy, accelerator_denial

OPTION_KEYS = ("accelerator", "count", "environment", "image", "size")
FORM_FIELDS = ("count", "environment", "image", "size")
MAX_TEXT = 256


@dataclass(frozen=True)
class Availability:
    """What the form shows for one accelerator: units a notebook can get now and in total."""

    free: int
    total: int
    batch: int = 0


@dataclass(frozen=True)
class SpawnPlan:
    """A validated choice: everything the spawner needs, nothing the user did not pick."""

    accelerator: Accelerator
    count: int
    image: str
    environment: str | None
    size: Size

    def as_options(self) -> dict[str, Any]:
        """The canonical user_options for this plan (what the form pre-selects next time)."""
        options: dict[str, Any] = {"accelerator": self.accelerator.key, "size": self.size.key}
        if self.accelerator.kind != "cpu":
            options["count"] = self.count
        if self.environment:
            options["environment"] = self.environment
        else:
            options["image"] = self.image
        return options


def _sizes_within_caps(catalog: Catalog, kind: str, policy: UserPolicy) -> dict[str, Size]:
    rules = policy.rules
    return {
        key: size
        for key, size in catalog.sizes_for(kind).items()
        if quantity(size.cpu) <= rules.max_cpu and quantity(size.memory) <= rules.max_memory
    }


def _disabled_reason(
    accelerator: Accelerator,
    policy: UserPolicy,
    held: int,
    availability: Availability | None,
    sizes: Mapping[str, Size],
) -> str | None:
    count = min(accelerator.counts)
    denial = accelerator_denial(policy, accelerator.key, count, held)
    if denial:
        return denial
    if not sizes:
        return "no size fits your CPU and memory limits"
    if accelerator.kind != "cpu" and (availability is None or availability.free < count):
        return "busy: none free now"
    return None


def _environment_option(
    environments: Sequence[Environment], custom: bool, selected: Mapping[str, Any]
) -> dict[str, Any]:
    """A card's environment choice: the user's last environment (`selected`, this card's last
    options), else the card's default, the first listed for its kind; or their custom image."""
    custom_selected = custom and bool(selected.get("image"))
    env_keys = [e.key for e in environments]
    env_default = None
    if not custom_selected:
        last = selected.get("environment")
        env_default = last if last in env_keys else next(iter(env_keys), None)
    return {
        "display_name": "Environment",
        "choices": {
            e.key: {"display_name": e.display_name, "default": e.key == env_default}
            for e in environments
        },
        "unlisted_choice": {
            "enabled": custom,
            "display_name": "Custom image",
            "selected": custom_selected,
            "value": selected.get("image", ""),
        },
    }


def build(
    catalog: Catalog,
    availability: Mapping[str, Availability],
    policy: UserPolicy,
    held: int,
    selected: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """KubeSpawner-shaped profiles, one per accelerator, with our availability and disabled reason.

    `selected` (the user's last valid options) picks the default profile and choices."""
    selected = selected or {}
    profiles = []
    for accelerator in catalog.accelerators.values():
        sizes = _sizes_within_caps(catalog, accelerator.kind, policy)
        environments = [
            e
            for e in catalog.environments_for(accelerator.kind)
            if policy.rules.allows_environment(e.key)
        ]
        custom = policy.rules.custom_images and accelerator.kind in catalog.custom_images.kinds
        reason = _disabled_reason(
            accelerator, policy, held, availability.get(accelerator.key), sizes
        )
        if not environments and not custom and reason is None:
            reason = "no environment available to your groups"
        mine = selected.get("accelerator") == accelerator.key
        default_size = (
            selected.get("size")
            if mine and selected.get("size") in sizes
            else catalog.default_sizes[accelerator.kind]
        )
        options: dict[str, Any] = {
            "environment": _environment_option(environments, custom, selected if mine else {}),
            "size": {
                "display_name": "Size",
                "choices": {
                    k: {"display_name": s.display_name, "default": k == default_size}
                    for k, s in sizes.items()
                },
            },
        }
        if accelerator.kind != "cpu":
            options["count"] = {
                "display_name": "How many",
                "choices": {
                    str(c): {"display_name": str(c), "default": mine and selected.get("count") == c}
                    for c in accelerator.counts
                },
            }
        avail = availability.get(accelerator.key)
        profiles.append(
            {
                "slug": accelerator.key,
                "display_name": accelerator.display_name,
                "description": accelerator.description,
                "default": False,
                "profile_options": options,
                "aiinfn": {
                    "kind": accelerator.kind,
                    "memory": accelerator.memory,
                    "free": avail.free if avail else None,
                    "total": avail.total if avail else None,
                    "batch": avail.batch if avail else 0,
                    "disabled_reason": reason,
                },
            }
        )
    enabled = [p for p in profiles if p["aiinfn"]["disabled_reason"] is None]
    chosen = next(
        (p for p in enabled if p["slug"] == selected.get("accelerator")),
        enabled[0] if enabled else None,
    )
    if chosen is not None:
        chosen["default"] = True
    return profiles


def _text(options: Mapping[str, Any], key: str) -> str | None:
    value = options.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise UserError(
            f"{key} must be a non-empty string of at most {MAX_TEXT} characters", reason="invalid"
        )
    return value


def default_accelerator(catalog: Catalog, policy: UserPolicy) -> str:
    """CPU only if allowed (it never waits for hardware), else the first allowed accelerator."""
    allowed = [k for k in catalog.accelerators if policy.rules.allows_accelerator(k)]
    if not allowed:
        raise UserError(
            "your groups are not allowed any accelerator on this platform", reason="policy"
        )
    cpu = [k for k in allowed if catalog.accelerators[k].kind == "cpu"]
    return (cpu or allowed)[0]


def resolve(catalog: Catalog, policy: UserPolicy, options: Any, held: int) -> SpawnPlan:
    """Validate user_options strictly; return the plan or raise UserError with a readable reason."""
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise UserError("user_options must be an object", reason="invalid")
    unknown = sorted(str(k)[:40] for k in options if k not in OPTION_KEYS)
    if unknown:
        raise UserError(
            f"unknown option(s): {', '.join(unknown)}; allowed: {', '.join(OPTION_KEYS)}",
            reason="invalid",
        )

    key = _text(options, "accelerator") or default_accelerator(catalog, policy)
    accelerator = catalog.accelerators.get(key)
    if accelerator is None:
        raise UserError(
            f"unknown accelerator {key!r}; choose one of {', '.join(catalog.accelerators)}",
            reason="invalid",
        )

    count = options.get("count", min(accelerator.counts))
    if not isinstance(count, int) or isinstance(count, bool) or count not in accelerator.counts:
        allowed = ", ".join(map(str, accelerator.counts))
        raise UserError(
            f"count for {accelerator.display_name} must be one of {allowed}", reason="invalid"
        )
    denial = accelerator_denial(policy, key, count, held)
    if denial:
        raise UserError(f"{accelerator.display_name}: {denial}", reason="policy", status=403)

    environment, image = _text(options, "environment"), _text(options, "image")
    if environment and image:
        raise UserError("give either an environment or a custom image, not both", reason="invalid")
    if image:
        if not policy.rules.custom_images:
            raise UserError(
                "custom images are not available to your groups", reason="policy", status=403
            )
        if accelerator.kind not in catalog.custom_images.kinds or not catalog.custom_images.allows(
            image
        ):
            raise UserError(
                "this custom image is not allowed: it must fully match one of the platform's "
                "image patterns",
                reason="invalid",
            )
    else:
        allowed_envs = [
            e
            for e in catalog.environments_for(accelerator.kind)
            if policy.rules.allows_environment(e.key)
        ]
        if environment is None:
            if not allowed_envs:
                raise UserError(
                    f"no environment for {accelerator.display_name} is available to your groups",
                    reason="policy",
                    status=403,
                )
            environment = allowed_envs[0].key
        chosen = catalog.environments.get(environment)
        if chosen is None:
            raise UserError(f"unknown environment {environment!r}", reason="invalid")
        if accelerator.kind not in chosen.kinds:
            raise UserError(
                f"{chosen.display_name} does not support {accelerator.display_name}",
                reason="invalid",
            )
        if not policy.rules.allows_environment(environment):
            raise UserError(
                f"{chosen.display_name} is not available to your groups",
                reason="policy",
                status=403,
            )
        image = chosen.image

    size_key = _text(options, "size") or catalog.default_sizes[accelerator.kind]
    size = catalog.sizes_for(accelerator.kind).get(size_key)
    if size is None:
        raise UserError(
            f"unknown size {size_key!r} for {accelerator.display_name}; choose one of "
            f"{', '.join(catalog.sizes_for(accelerator.kind))}",
            reason="invalid",
        )
    if size_key not in _sizes_within_caps(catalog, accelerator.kind, policy):
        raise UserError(
            f"size {size.display_name} is over your CPU or memory limit",
            reason="policy",
            status=403,
        )
    return SpawnPlan(
        accelerator=accelerator, count=count, image=image, environment=environment, size=size
    )


def options_from_form(formdata: Mapping[str, list[str]]) -> dict[str, Any]:
    """The spawn form's fields -> user_options. Per-accelerator fields are named `<field>--<key>`;
    only the chosen accelerator's are kept. Duplicates and unknown fields are refused."""
    allowed_prefixes = tuple(f"{f}--" for f in FORM_FIELDS)
    for name, values in formdata.items():
        if name == "_xsrf":
            continue
        if name != "accelerator" and not name.startswith(allowed_prefixes):
            raise UserError(f"unknown form field {name[:40]!r}", reason="invalid")
        if not isinstance(values, list) or len(values) != 1:
            raise UserError(
                f"form field {name[:40]!r} must be given exactly once", reason="invalid"
            )
    chosen = (formdata.get("accelerator") or [""])[0]
    if not chosen:
        raise UserError("choose an accelerator", reason="invalid")
    options: dict[str, Any] = {"accelerator": chosen}
    for field in FORM_FIELDS:
        value = formdata.get(f"{field}--{chosen}", [""])[0].strip()
        if not value:
            continue
        if field == "count":
            if not value.isdigit() or len(value) > 2:
                raise UserError("count must be a whole number", reason="invalid")
            options["count"] = int(value)
        else:
            options[field] = value
    if options.get("environment") == "custom-image":
        options.pop("environment")
    else:
        options.pop("image", None)
    return options


def options_from_query(query: Mapping[str, list[str]]) -> dict[str, Any]:
    """A /hub/spawn link's query -> user_options that pre-fill the form (a link never starts a
    server). Fields are the REST API's, each at most once, optionally `opt-` prefixed (JupyterHub 6
    strips the prefix, 5.5 does not); the form's `_xsrf` is ignored."""
    options: dict[str, Any] = {}
    for name, values in query.items():
        if name == "_xsrf":
            continue
        name = name.removeprefix("opt-")
        if name not in OPTION_KEYS:
            allowed = ", ".join(OPTION_KEYS)
            raise UserError(
                f"unknown option {name[:40]!r} in the link; allowed: {allowed}", reason="invalid"
            )
        if len(values) != 1 or name in options:
            raise UserError(f"option {name!r} may be given at most once", reason="invalid")
        value = values[0].strip()
        if name == "count":
            if not value.isdigit() or len(value) > 2:
                raise UserError("count must be a whole number", reason="invalid")
            options[name] = int(value)
        else:
            options[name] = value
    return options
