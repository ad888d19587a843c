"""The platform catalog: accelerators, environments, sizes and projects, from one admin YAML file.

Loaded and validated once at hub start; a bad file raises CatalogError with one line per
problem, naming the file, the path inside it and what is allowed, which stops the hub. The
file's shape is a set of pydantic models, so docs/catalog.schema.json (`python -m
aiinfn_hub.catalog --schema`) gives admins the same checks in their editor. Everything here is
immutable and pure.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from . import names
from .admin_files import (
    Problem,
    Quantity,
    StrictModel,
    location,
    matching,
    must_be,
    nonempty_text,
    problems,
    quantity,
    schema_text,
    whole_number,
)
from .image_policy import IMAGE_PATTERN, CustomImages, ImageRule

Kind = Literal["cpu", "gpu", "mig", "fpga"]
ACCELERATOR_KINDS: tuple[str, ...] = get_args(Kind)
MAX_BATCH_SHARE = 1000
KEY_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
# Kubernetes qualified names for extended resources and labels: prefix/name.
RESOURCE_PATTERN = re.compile(
    r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?"
    r"/[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$"
)
LABEL_KEY_PATTERN = re.compile(
    r"^([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?/)?"
    r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE_PATTERN = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?$")


class CatalogError(ValueError):
    """The catalog file is invalid; one line per problem: file, path inside it, what is allowed."""


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
        """The projects among these group names, in catalog order; other groups are system
        groups."""
        member = set(groups)
        return [p for key, p in self.projects.items() if key in member]

    def sizes_for(self, kind: str) -> Mapping[str, Size]:
        return self.sizes[kind]


# -- the shape of an admin's file, as pydantic models; their errors in the admin's words --------
# (policy.py validates its entries with the same pieces.) Validators raise ValueError with the
# admin's wording; problems() turns pydantic's ValidationError into (where, what) lines.

Key = Annotated[
    str,
    *matching(KEY_PATTERN, "a key of lower-case letters, digits and '-', at most 40 characters"),
]
ResourceName = Annotated[
    str, *matching(RESOURCE_PATTERN, "an extended resource name such as nvidia.com/gpu")
]
LabelKey = Annotated[
    str, *matching(LABEL_KEY_PATTERN, "a label key such as nvidia.com/gpu.product")
]
LabelValue = Annotated[str, *matching(LABEL_VALUE_PATTERN, "a label value (quote numbers)")]
Image = Annotated[str, *matching(IMAGE_PATTERN, "a full image reference with a tag or digest")]
KindName = Annotated[Kind, must_be("an accelerator kind", ", ".join(ACCELERATOR_KINDS))]
Kinds = Annotated[tuple[KindName, ...], Field(min_length=1)]
Count = Annotated[
    int, Field(strict=True, ge=0, le=16), must_be("a whole number 1..16 (CPU only: 0)")
]
Name = Annotated[str, *nonempty_text(200)]
Memory = Annotated[str, *nonempty_text(40)]
Description = Annotated[str, *nonempty_text(500)]
Share = Annotated[int, *whole_number(0, MAX_BATCH_SHARE)]
# Mappings keyed by catalog keys: the schema refuses other keys too.
_KEYED = Field(json_schema_extra={"additionalProperties": False})


def _regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as error:
        raise ValueError(f"is not a regular expression: {error}") from None
    return pattern


def _group_key(key: str) -> str:
    try:
        group = names.group(key)
    except names.InvalidName as error:
        raise ValueError(error.message) from None
    if group != key:
        raise ValueError("write the group name without a leading '/'")
    return key


ImagePattern = Annotated[str, *nonempty_text(300), AfterValidator(_regex)]
Registry = Annotated[
    str, *matching(re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?$"), "a registry host")
]
RepositoryRule = Annotated[
    str,
    *matching(
        re.compile(r"^([a-z0-9._-]+|\*)(/([a-z0-9._-]+|\*))*(/\*\*)?$"),
        "a repository path ('*' for one segment, a final '**' for any below)",
    ),
]
ProjectKey = Annotated[str, Field(strict=True), AfterValidator(_group_key)]


class AcceleratorEntry(StrictModel):
    """One choice on the spawn page: a GPU model, a MIG profile, an FPGA board, or CPU only."""

    display_name: Name = Field(description="What the spawn page shows.")
    kind: KindName
    resource: ResourceName | None = Field(
        None,
        validate_default=True,
        description="The extended resource a pod asks for, e.g. nvidia.com/gpu (not for cpu).",
    )
    node_labels: Annotated[dict[LabelKey, LabelValue], _KEYED] = Field(
        default_factory=dict, description="Labels that must all match on a node that offers it."
    )
    memory: Memory | None = Field(None, description="Its memory as shown, e.g. 16 GB.")
    description: Description | None = None
    counts: Annotated[tuple[Count, ...], Field(min_length=1)] | None = Field(
        None, description="How many one server may ask for (default [1]; cpu: [0])."
    )

    @field_validator("resource")
    @classmethod
    def _resource_by_kind(cls, value: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("kind")
        if kind == "cpu" and value is not None:
            raise ValueError("CPU only takes no resource")
        if kind not in (None, "cpu") and value is None:
            raise ValueError("must be an extended resource name such as nvidia.com/gpu")
        return value

    @field_validator("node_labels")
    @classmethod
    def _labels_by_kind(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        if value and info.data.get("kind") == "cpu":
            raise ValueError("CPU only takes no node_labels")
        return value

    @field_validator("counts")
    @classmethod
    def _counts_by_kind(
        cls, value: tuple[int, ...] | None, info: ValidationInfo
    ) -> tuple[int, ...] | None:
        kind = info.data.get("kind")
        if value is None or kind is None:
            return value
        wrong = set(value) != {0} if kind == "cpu" else 0 in value
        if wrong:
            raise ValueError("must list whole numbers 1..16 (CPU only: [0])")
        return value


class EnvironmentEntry(StrictModel):
    """A software environment: an OCI image and the accelerator kinds it supports."""

    display_name: Name
    image: Image = Field(description="A full image reference with a tag or digest.")
    kinds: Kinds
    description: Description | None = None


class ImageRuleEntry(StrictModel):
    """One allowed place for custom images: a registry and a repository."""

    registry: Registry = Field(description="Registry host (and port), e.g. harbor.example.org.")
    repository: RepositoryRule = Field(
        description="Repository path; a '*' segment matches one segment, a final '**' any below."
    )
    digest: Annotated[bool, Field(strict=True)] = Field(
        False, description="Require images pinned by digest (@sha256:...)."
    )


class CustomImagesEntry(StrictModel):
    """Images users may type in: those matching one of the patterns or allowed by an entry."""

    patterns: tuple[ImagePattern, ...] = Field(
        (), description="Regular expressions an image must match in full."
    )
    allow: tuple[ImageRuleEntry, ...] = Field(
        (), description="Registries and repositories images may come from."
    )
    kinds: Kinds

    @model_validator(mode="after")
    def _something_allowed(self) -> CustomImagesEntry:
        if not self.patterns and not self.allow:
            raise ValueError("give patterns or allow (or leave custom_images out)")
        return self


class SizeEntry(StrictModel):
    """CPU and memory of a server; NVMe scratch and /dev/shm (absent: the storage defaults)."""

    display_name: Name
    cpu: Quantity
    memory: Quantity
    scratch: Quantity | None = None
    shm: Quantity | None = Field(None, description="Memory-backed, so at most memory.")

    @field_validator("shm")
    @classmethod
    def _shm_within_memory(cls, value: str | None, info: ValidationInfo) -> str | None:
        memory = info.data.get("memory")
        if value is not None and memory is not None and quantity(value) > quantity(memory):
            raise ValueError("must not exceed memory (/dev/shm is counted as memory)")
        return value


class KindSizes(StrictModel):
    """The sizes offered with one accelerator kind, and the one the form selects first."""

    choices: Annotated[dict[Key, SizeEntry], _KEYED]
    default: Key

    @field_validator("default")
    @classmethod
    def _default_is_a_choice(cls, value: str, info: ValidationInfo) -> str:
        choices = info.data.get("choices")
        if choices is not None and value not in choices:
            raise ValueError(f"{value!r} is not one of its choices (allowed: {', '.join(choices)})")
        return value


class SizesEntry(StrictModel):
    """Server sizes for each accelerator kind."""

    cpu: KindSizes
    gpu: KindSizes
    mig: KindSizes
    fpga: KindSizes


class ProjectEntry(StrictModel):
    """A research project: an IAM group with shared folders, a gid, a job queue, accounting."""

    display_name: Name
    description: Description | None = None
    batch_share: Share = Field(
        1, description="Its weight in every Kueue flavor; 0: it only borrows idle capacity."
    )


class CatalogFile(StrictModel):
    """What users may choose on the spawn page: accelerators, environments, sizes, projects."""

    accelerators: Annotated[dict[Key, AcceleratorEntry], Field(min_length=1), _KEYED]
    environments: Annotated[dict[Key, EnvironmentEntry], _KEYED] = Field(
        description="In order: an accelerator's default environment is the first of its kind."
    )
    custom_images: CustomImagesEntry | None = None
    sizes: SizesEntry
    projects: dict[ProjectKey, ProjectEntry] | None = Field(
        None, description="Keyed by IAM group name, without the leading '/'."
    )


def _cross_problems(document: CatalogFile) -> list[Problem]:
    """What no single entry shows: MIG profiles sharing a resource, kinds no environment runs."""
    found: list[Problem] = []
    mig: dict[str, str] = {}
    for key, entry in document.accelerators.items():
        if entry.kind == "mig" and entry.resource in mig:
            found.append(
                (
                    ("accelerators", key, "resource"),
                    f"MIG profile {mig[entry.resource]} has the same resource",
                )
            )
        elif entry.kind == "mig" and entry.resource:
            mig[entry.resource] = key
    supported = {
        kind for environment in document.environments.values() for kind in environment.kinds
    }
    supported |= set(document.custom_images.kinds if document.custom_images else ())
    for key, entry in document.accelerators.items():
        if entry.kind not in supported:
            kinds = ", ".join(k for k in ACCELERATOR_KINDS if k in supported) or "none"
            found.append(
                (
                    ("accelerators", key),
                    f"no environment supports kind {entry.kind!r} "
                    f"(environments and custom_images support: {kinds})",
                )
            )
    return found


def _accelerator(key: str, entry: AcceleratorEntry) -> Accelerator:
    counts = entry.counts or ((0,) if entry.kind == "cpu" else (1,))
    return Accelerator(
        key,
        entry.display_name,
        entry.kind,
        entry.resource,
        dict(entry.node_labels),
        entry.memory or "",
        entry.description or "",
        tuple(sorted(set(counts))),
    )


def _build(document: CatalogFile) -> Catalog:
    custom = document.custom_images
    kinds = {kind: getattr(document.sizes, kind) for kind in ACCELERATOR_KINDS}
    return Catalog(
        accelerators={
            key: _accelerator(key, entry) for key, entry in document.accelerators.items()
        },
        environments={
            key: Environment(
                key,
                entry.display_name,
                entry.image,
                tuple(dict.fromkeys(entry.kinds)),
                entry.description or "",
            )
            for key, entry in document.environments.items()
        },
        custom_images=(
            CustomImages(
                tuple(map(re.compile, custom.patterns)),
                tuple(dict.fromkeys(custom.kinds)),
                tuple(ImageRule(r.registry, r.repository, r.digest) for r in custom.allow),
            )
            if custom
            else CustomImages()
        ),
        sizes={
            kind: {
                key: Size(
                    key,
                    size.display_name,
                    size.cpu,
                    size.memory,
                    size.scratch or "",
                    size.shm or "",
                )
                for key, size in sizes.choices.items()
            }
            for kind, sizes in kinds.items()
        },
        default_sizes={kind: sizes.default for kind, sizes in kinds.items()},
        projects={
            key: Project(key, entry.display_name, entry.description or "", entry.batch_share)
            for key, entry in (document.projects or {}).items()
        },
    )


def _error(source: str, found: Iterable[Problem]) -> CatalogError:
    return CatalogError(
        "\n".join(f"{source}: {location(loc) or 'top level'}: {message}" for loc, message in found)
    )


def parse(document: Any, source: str = "catalog") -> Catalog:
    """Validate a parsed catalog document and build the Catalog; errors name it `source`."""
    try:
        checked = CatalogFile.model_validate(document)
    except ValidationError as error:
        raise _error(source, problems(error)) from None
    found = _cross_problems(checked)
    if found:
        raise _error(source, found)
    return _build(checked)


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
    return parse(document, str(path))


def default_path() -> Path:
    """The catalog shipped with the package: the AI_INFN farm."""
    return Path(__file__).parent / "catalogs" / "ai-infn.yaml"


def schema() -> str:
    """docs/catalog.schema.json: the catalog file's JSON Schema, for admins' editors."""
    return schema_text(CatalogFile, "aiinfn-hub platform catalog")


if __name__ == "__main__":
    if sys.argv[1:] != ["--schema"]:
        sys.exit("usage: python -m aiinfn_hub.catalog --schema > docs/catalog.schema.json")
    sys.stdout.write(schema())
