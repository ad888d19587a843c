"""The platform catalog: accelerators, environments, sizes and projects, from one admin YAML file.

Loaded and validated once at hub start; a bad file raises CatalogError naming the key and why,
which stops the hub. Everything here is immutable and pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from . import names

ACCELERATOR_KINDS = ("cpu", "gpu", "mig", "fpga")
MAX_BATCH_SHARE = 1000
KEY_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
# Kubernetes qualified names for extended resources and labels: prefix/name.
RESOURCE_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?/[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")
LABEL_KEY_PATTERN = re.compile(r"^([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE_PATTERN = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?$")
QUANTITY_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti)?$")
IMAGE_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9._-]+)+(:[A-Za-z0-9._-]{1,128}|@sha256:[a-f0-9]{64})$")


_SUFFIX_FACTORS = {"": 1, "m": 0.001, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(text: str) -> float:
    """A Kubernetes quantity of the forms the catalog accepts ("4", "500m", "16Gi") as a number."""
    match = QUANTITY_PATTERN.fullmatch(str(text))
    if not match:
        raise ValueError(f"not a quantity: {text!r}")
    number = str(text)[: len(str(text)) - len(match.group(2) or "")]
    return float(number) * _SUFFIX_FACTORS[match.group(2) or ""]


class CatalogError(ValueError):
    """The catalog file is invalid; the message names the offending key."""


@dataclass(frozen=True)
class Accelerator:
    """One choice on the spawn page: a GPU model, a MIG profile, an FPGA board, or CPU only.

    `resource` is the extended resource a pod asks for (none for CPU only); `node_labels` must
    all match on a node for it to offer this accelerator; `counts` are the numbers a user may
    ask for in one server.
    """

    key: str
    display_name: str
    kind: str
    resource: str | None = None
    node_labels: Mapping[str, str] = field(default_factory=dict)
    memory: str = ""
    description: str = ""
    counts: tuple[int, ...] = (1,)

    def offered_by(self, labels: Mapping[str, str]) -> bool:
        """True if a node with these labels carries this accelerator (its resource aside)."""
        return all(labels.get(k) == v for k, v in self.node_labels.items())


@dataclass(frozen=True)
class Environment:
    """A software environment: an OCI image and the accelerator kinds it supports."""

    key: str
    display_name: str
    image: str
    kinds: tuple[str, ...]
    description: str = ""


@dataclass(frozen=True)
class CustomImages:
    """Images users may type in, if they fully match one of the admin's patterns."""

    patterns: tuple[re.Pattern[str], ...] = ()
    kinds: tuple[str, ...] = ()

    def allows(self, image: str) -> bool:
        return len(image) <= 256 and any(p.fullmatch(image) for p in self.patterns)


@dataclass(frozen=True)
class Size:
    """CPU and memory for a server, guaranteed (requests) and capped (limits) alike; optional
    NVMe scratch and /dev/shm sizes (empty: the storage settings' defaults)."""

    key: str
    display_name: str
    cpu: str
    memory: str
    scratch: str = ""
    shm: str = ""


@dataclass(frozen=True)
class Project:
    """A research project: an IAM group whose members share folders, a gid, a job queue and
    accounting. `key` is the group name exactly as the hub knows it (e.g. `lhcb/flashsim`).
    `batch_share` weighs the part of every Kueue flavor its job queue owns (`aiinfn-hub render`):
    equal by default; 0 owns nothing and only borrows what others leave idle."""

    key: str
    display_name: str
    description: str = ""
    batch_share: int = 1


@dataclass(frozen=True)
class Catalog:
    accelerators: Mapping[str, Accelerator]
    environments: Mapping[str, Environment]
    custom_images: CustomImages
    sizes: Mapping[str, Mapping[str, Size]]
    default_sizes: Mapping[str, str]
    projects: Mapping[str, Project] = field(default_factory=dict)

    def environments_for(self, kind: str) -> list[Environment]:
        return [e for e in self.environments.values() if kind in e.kinds]

    def projects_of(self, groups: Iterable[str]) -> list[Project]:
        """The projects among these group names, in catalog order; other groups are system groups."""
        member = set(groups)
        return [p for key, p in self.projects.items() if key in member]

    def sizes_for(self, kind: str) -> Mapping[str, Size]:
        return self.sizes[kind]


def _fail(where: str, why: str) -> CatalogError:
    return CatalogError(f"catalog: {where}: {why}")


def _mapping(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise _fail(where, "must be a mapping")
    return value


def _only(entry: dict, allowed: set[str], required: set[str], where: str) -> None:
    unknown = set(entry) - allowed
    if unknown:
        raise _fail(where, f"unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    missing = required - set(entry)
    if missing:
        raise _fail(where, f"missing field(s) {', '.join(sorted(missing))}")


def _text(value: Any, where: str, limit: int = 200) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise _fail(where, f"must be a non-empty string of at most {limit} characters")
    return value


def _key(key: Any, where: str) -> str:
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
        raise _fail(where, "keys are lower-case letters, digits and '-', at most 40 characters")
    return key


def _kinds(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or any(k not in ACCELERATOR_KINDS for k in value):
        raise _fail(where, f"must be a non-empty list of {', '.join(ACCELERATOR_KINDS)}")
    return tuple(dict.fromkeys(value))


def _accelerator(key: str, entry: dict) -> Accelerator:
    where = f"accelerators.{key}"
    _only(entry, {"display_name", "kind", "resource", "node_labels", "memory", "description", "counts"},
          {"display_name", "kind"}, where)
    kind = entry["kind"]
    if kind not in ACCELERATOR_KINDS:
        raise _fail(f"{where}.kind", f"must be one of {', '.join(ACCELERATOR_KINDS)}")
    resource = entry.get("resource")
    if kind == "cpu":
        if resource or entry.get("node_labels"):
            raise _fail(where, "CPU only takes no resource and no node_labels")
    elif not isinstance(resource, str) or not RESOURCE_PATTERN.fullmatch(resource):
        raise _fail(f"{where}.resource", "must be an extended resource name such as nvidia.com/gpu")
    labels = _mapping(entry.get("node_labels") or {}, f"{where}.node_labels")
    for label, value in labels.items():
        if not isinstance(label, str) or not LABEL_KEY_PATTERN.fullmatch(label):
            raise _fail(f"{where}.node_labels", f"{label!r} is not a label key")
        if not isinstance(value, str) or not LABEL_VALUE_PATTERN.fullmatch(value):
            raise _fail(f"{where}.node_labels.{label}", "must be a label value (quote numbers)")
    counts = entry.get("counts", [1] if kind != "cpu" else [0])
    if (not isinstance(counts, list) or not counts
            or any(not isinstance(c, int) or isinstance(c, bool) or not 0 <= c <= 16 for c in counts)
            or (kind == "cpu") != (counts == [0])):
        raise _fail(f"{where}.counts", "must list whole numbers 1..16 (CPU only: [0])")
    return Accelerator(
        key=key,
        display_name=_text(entry["display_name"], f"{where}.display_name"),
        kind=kind,
        resource=resource,
        node_labels=dict(labels),
        memory=_text(entry["memory"], f"{where}.memory", 40) if "memory" in entry else "",
        description=_text(entry["description"], f"{where}.description", 500) if "description" in entry else "",
        counts=tuple(sorted(set(counts))),
    )


def _environment(key: str, entry: dict) -> Environment:
    where = f"environments.{key}"
    _only(entry, {"display_name", "image", "kinds", "description"}, {"display_name", "image", "kinds"}, where)
    image = entry["image"]
    if not isinstance(image, str) or not IMAGE_PATTERN.fullmatch(image):
        raise _fail(f"{where}.image", "must be a full image reference with a tag or digest")
    return Environment(
        key=key,
        display_name=_text(entry["display_name"], f"{where}.display_name"),
        image=image,
        kinds=_kinds(entry["kinds"], f"{where}.kinds"),
        description=_text(entry["description"], f"{where}.description", 500) if "description" in entry else "",
    )


def _custom_images(entry: Any) -> CustomImages:
    if entry is None:
        return CustomImages()
    entry = _mapping(entry, "custom_images")
    _only(entry, {"patterns", "kinds"}, {"patterns", "kinds"}, "custom_images")
    patterns = []
    for i, pattern in enumerate(entry["patterns"] or []):
        where = f"custom_images.patterns[{i}]"
        try:
            patterns.append(re.compile(_text(pattern, where, 300)))
        except re.error as error:
            raise _fail(where, f"is not a regular expression: {error}") from None
    return CustomImages(patterns=tuple(patterns), kinds=_kinds(entry["kinds"], "custom_images.kinds"))


def _sizes(entry: Any) -> tuple[dict[str, dict[str, Size]], dict[str, str]]:
    entry = _mapping(entry, "sizes")
    sizes: dict[str, dict[str, Size]] = {}
    defaults: dict[str, str] = {}
    for kind in ACCELERATOR_KINDS:
        where = f"sizes.{kind}"
        if kind not in entry:
            raise _fail("sizes", f"missing sizes for kind {kind!r}")
        block = _mapping(entry[kind], where)
        _only(block, {"default", "choices"}, {"default", "choices"}, where)
        choices = _mapping(block["choices"], f"{where}.choices")
        sizes[kind] = {}
        for key, size in choices.items():
            size_where = f"{where}.choices.{_key(key, f'{where}.choices')}"
            size = _mapping(size, size_where)
            _only(size, {"display_name", "cpu", "memory", "scratch", "shm"}, {"display_name", "cpu", "memory"},
                  size_where)
            for resource in ("cpu", "memory", "scratch", "shm"):
                if resource in size and (not isinstance(size[resource], (str, int))
                                         or not QUANTITY_PATTERN.fullmatch(str(size[resource]))):
                    raise _fail(f"{size_where}.{resource}", "must be a Kubernetes quantity such as 4 or 16Gi")
            if "shm" in size and quantity(str(size["shm"])) > quantity(str(size["memory"])):
                raise _fail(f"{size_where}.shm", "must not exceed memory (/dev/shm is counted as memory)")
            sizes[kind][key] = Size(key, _text(size["display_name"], f"{size_where}.display_name"),
                                    str(size["cpu"]), str(size["memory"]),
                                    str(size.get("scratch", "")), str(size.get("shm", "")))
        if block["default"] not in sizes[kind]:
            raise _fail(f"{where}.default", f"{block['default']!r} is not one of its choices")
        defaults[kind] = block["default"]
    unknown = set(entry) - set(ACCELERATOR_KINDS)
    if unknown:
        raise _fail("sizes", f"unknown kind(s) {', '.join(sorted(map(str, unknown)))}")
    return sizes, defaults


def _projects(entry: Any) -> dict[str, Project]:
    projects = {}
    for key, value in _mapping(entry if entry is not None else {}, "projects").items():
        where = f"projects.{key}"
        try:
            group = names.group(key)
        except names.InvalidName as error:
            raise _fail(where, error.message) from None
        if group != key:
            raise _fail(where, "write the group name without a leading '/'")
        value = _mapping(value, where)
        _only(value, {"display_name", "description", "batch_share"}, {"display_name"}, where)
        share = value.get("batch_share", 1)
        if isinstance(share, bool) or not isinstance(share, int) \
                or not 0 <= share <= MAX_BATCH_SHARE:
            raise _fail(f"{where}.batch_share", f"must be a whole number 0..{MAX_BATCH_SHARE}")
        projects[key] = Project(key, _text(value["display_name"], f"{where}.display_name"),
                                _text(value["description"], f"{where}.description", 500)
                                if "description" in value else "", share)
    return projects


def parse(document: Any) -> Catalog:
    """Validate a parsed catalog document and build the Catalog."""
    document = _mapping(document, "top level")
    _only(document, {"accelerators", "environments", "custom_images", "sizes", "projects"},
          {"accelerators", "environments", "sizes"}, "top level")
    accelerators = {
        _key(k, "accelerators"): _accelerator(k, _mapping(v, f"accelerators.{k}"))
        for k, v in _mapping(document["accelerators"], "accelerators").items()
    }
    if not accelerators:
        raise _fail("accelerators", "must name at least one accelerator")
    resources = [a.resource for a in accelerators.values() if a.kind == "mig"]
    if len(resources) != len(set(resources)):
        raise _fail("accelerators", "two MIG profiles share a resource name")
    environments = {
        _key(k, "environments"): _environment(k, _mapping(v, f"environments.{k}"))
        for k, v in _mapping(document["environments"], "environments").items()
    }
    sizes, defaults = _sizes(document["sizes"])
    catalog = Catalog(accelerators, environments, _custom_images(document.get("custom_images")), sizes, defaults,
                      _projects(document.get("projects")))
    for accelerator in accelerators.values():
        if not catalog.environments_for(accelerator.kind) and accelerator.kind not in catalog.custom_images.kinds:
            raise _fail(f"accelerators.{accelerator.key}", f"no environment supports kind {accelerator.kind!r}")
    return catalog


def load(path: str | Path) -> Catalog:
    """Read and validate the catalog file."""
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise CatalogError(f"catalog: cannot read {path}: {error.strerror}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise CatalogError(f"catalog: {path} is not valid YAML: {error}") from None
    return parse(document)


def default_path() -> Path:
    """The catalog shipped with the package: the AI_INFN farm."""
    return Path(__file__).parent / "catalogs" / "ai-infn.yaml"
