"""Catalog + inventory + policy -> the spawn page's profiles; user_options -> a SpawnPlan. Pure.

The form and the REST API share one path: the form's fields are first turned into the same
user_options dict a script would POST (`options_from_form`), then `resolve` validates it
against the catalog and the user's policy. Anything outside them is a UserError (HTTP 400).

user_options: {"accelerator": key, "count": int, "environment": key | "image": custom image,
"size": key}; every field is optional and defaults to the catalog's defaults.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any

from .admin_files import quantity
from .catalog import Accelerator, Catalog, Environment, Size
from .errors import UserError
from .inventory import Counts
from .policy import UserPolicy, accelerator_denial

OPTION_KEYS = ("accelerator", "count", "environment", "image", "size")
FORM_FIELDS = ("count", "environment", "image", "size")
MAX_TEXT = 256


@dataclass(frozen=True)
class Availability:
    """What the form shows for one accelerator. `free`: units a notebook can get, idle or lent
    to batch jobs, which yield (a spawn is checked against it); `free_now`: idle units; `batch`:
    units batch jobs hold; `batch_jobs`: the jobs holding them, at most what a notebook stops."""

    free: int
    total: int
    batch: int = 0
    batch_jobs: int = 0
    _: KW_ONLY
    free_now: int

    @classmethod
    def of(cls, counts: Counts) -> Availability:
        """The inventory's counts of one accelerator, before reservations."""
        return cls(
            free=counts.free_if_preempted,
            total=counts.total,
            batch=counts.batch,
            batch_jobs=counts.batch_jobs,
            free_now=counts.free,
        )


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
        if availability is not None and availability.batch:
            return "busy: none free, even if batch jobs stop"
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
    profiles = [
        _profile(catalog, accelerator, availability.get(accelerator.key), policy, held, selected)
        for accelerator in catalog.accelerators.values()
    ]
    enabled = [p for p in profiles if p["aiinfn"]["disabled_reason"] is None]
    chosen = next(
        (p for p in enabled if p["slug"] == selected.get("accelerator")),
        enabled[0] if enabled else None,
    )
    if chosen is not None:
        chosen["default"] = True
    return profiles


def _allowed_environments(catalog: Catalog, kind: str, policy: UserPolicy) -> list[Environment]:
    """The kind's environments the user's groups may use, in catalog order (the first is the
    default when the user names none)."""
    return [e for e in catalog.environments_for(kind) if policy.rules.allows_environment(e.key)]


def _profile(
    catalog: Catalog,
    accelerator: Accelerator,
    avail: Availability | None,
    policy: UserPolicy,
    held: int,
    selected: Mapping[str, Any],
) -> dict[str, Any]:
    """One accelerator's card: only the choices the user's policy allows, the live availability,
    and why the card is disabled (None: it can be picked)."""
    sizes = _sizes_within_caps(catalog, accelerator.kind, policy)
    environments = _allowed_environments(catalog, accelerator.kind, policy)
    custom = policy.rules.custom_images and accelerator.kind in catalog.custom_images.kinds
    reason = _disabled_reason(accelerator, policy, held, avail, sizes)
    if not environments and not custom and reason is None:
        reason = "no environment available to your groups"
    mine = selected.get("accelerator") == accelerator.key
    return {
        "slug": accelerator.key,
        "display_name": accelerator.display_name,
        "description": accelerator.description,
        "default": False,
        "profile_options": _profile_options(
            catalog, accelerator, sizes, environments, custom, selected if mine else {}, avail
        ),
        "aiinfn": {
            "kind": accelerator.kind,
            "memory": accelerator.memory,
            "free": avail.free if avail else None,
            "free_now": avail.free_now if avail else None,
            "total": avail.total if avail else None,
            "batch": avail.batch if avail else 0,
            "batch_jobs": avail.batch_jobs if avail else 0,
            "disabled_reason": reason,
        },
    }


def _profile_options(
    catalog: Catalog,
    accelerator: Accelerator,
    sizes: Mapping[str, Size],
    environments: Sequence[Environment],
    custom: bool,
    last: Mapping[str, Any],
    avail: Availability | None,
) -> dict[str, Any]:
    """A card's choices, pre-selecting the user's last options on this card (`last`, empty for
    the other cards) where they are still offered, else the catalog's defaults. Counts over
    what is free (batch jobs stopped) are left out: they could only be refused."""
    default_size = (
        last.get("size") if last.get("size") in sizes else catalog.default_sizes[accelerator.kind]
    )
    options: dict[str, Any] = {
        "environment": _environment_option(environments, custom, last),
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
                str(c): {"display_name": str(c), "default": last.get("count") == c}
                for c in accelerator.counts
                if avail is None or c <= avail.free
            },
        }
    return options


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
    options = _known_options(options)
    accelerator, count = _accelerator_and_count(catalog, policy, options, held)
    environment, image = _text(options, "environment"), _text(options, "image")
    if environment and image:
        raise UserError("give either an environment or a custom image, not both", reason="invalid")
    if image:
        check_custom_image(catalog, policy, accelerator, image)
    else:
        chosen = _environment(catalog, policy, accelerator, environment)
        environment, image = chosen.key, chosen.image
    size = _size(catalog, policy, accelerator, _text(options, "size"))
    return SpawnPlan(
        accelerator=accelerator, count=count, image=image, environment=environment, size=size
    )


def _known_options(options: Any) -> Mapping[str, Any]:
    """user_options as a mapping with only the fields we know (None: every default), so a typo
    is an error rather than a silently ignored choice."""
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
    return options


def _accelerator_and_count(
    catalog: Catalog, policy: UserPolicy, options: Mapping[str, Any], held: int
) -> tuple[Accelerator, int]:
    """The accelerator and how many units, both offered by the catalog and within the user's
    policy given the units they already hold."""
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
    return accelerator, count


def check_custom_image(
    catalog: Catalog, policy: UserPolicy, accelerator: Accelerator, image: str
) -> None:
    """A custom image needs the groups' permission and the catalog's custom_images to allow it
    for this kind of accelerator (a spawn's or a batch job's)."""
    if not policy.rules.custom_images:
        raise UserError(
            "custom images are not available to your groups", reason="policy", status=403
        )
    if accelerator.kind not in catalog.custom_images.kinds or not catalog.custom_images.allows(
        image
    ):
        raise UserError(
            f"this custom image is not allowed for {accelerator.display_name}: it must come "
            "from one of the platform's allowed registries and repositories (or match its "
            "image patterns)",
            reason="invalid",
        )


def _environment(
    catalog: Catalog, policy: UserPolicy, accelerator: Accelerator, key: str | None
) -> Environment:
    """The named environment (None: the first the user's groups may use), checked against the
    accelerator it must support and the groups' allowlist."""
    if key is None:
        allowed = _allowed_environments(catalog, accelerator.kind, policy)
        if not allowed:
            raise UserError(
                f"no environment for {accelerator.display_name} is available to your groups",
                reason="policy",
                status=403,
            )
        key = allowed[0].key
    chosen = catalog.environments.get(key)
    if chosen is None:
        raise UserError(f"unknown environment {key!r}", reason="invalid")
    if accelerator.kind not in chosen.kinds:
        raise UserError(
            f"{chosen.display_name} does not support {accelerator.display_name}",
            reason="invalid",
        )
    if not policy.rules.allows_environment(key):
        raise UserError(
            f"{chosen.display_name} is not available to your groups",
            reason="policy",
            status=403,
        )
    return chosen


def _size(catalog: Catalog, policy: UserPolicy, accelerator: Accelerator, key: str | None) -> Size:
    """The named size (None: the kind's default), which must be within the user's CPU and
    memory caps."""
    key = key or catalog.default_sizes[accelerator.kind]
    size = catalog.sizes_for(accelerator.kind).get(key)
    if size is None:
        raise UserError(
            f"unknown size {key!r} for {accelerator.display_name}; choose one of "
            f"{', '.join(catalog.sizes_for(accelerator.kind))}",
            reason="invalid",
        )
    if key not in _sizes_within_caps(catalog, accelerator.kind, policy):
        raise UserError(
            f"size {size.display_name} is over your CPU or memory limit",
            reason="policy",
            status=403,
        )
    return size


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
