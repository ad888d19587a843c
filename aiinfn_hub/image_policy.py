"""Which container images users may type in (the catalog's `custom_images`): full references
matched against the admin's regular expressions or an allowlist of registries and repositories,
digest pinning optional. Pure: the catalog builds a CustomImages, the spawner and the job
service ask it."""

from __future__ import annotations

import re
from dataclasses import dataclass

IMAGE_PATTERN = re.compile(
    r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9._-]+)+"
    r"(:[A-Za-z0-9._-]{1,128}|@sha256:[a-f0-9]{64})$"
)


def split_image(image: str) -> tuple[str, str, str | None] | None:
    """(registry, repository, digest or None) of a full image reference that names its registry
    (IMAGE_PATTERN; the first part has a '.' or a port, or is localhost), else None."""
    if not IMAGE_PATTERN.fullmatch(image):
        return None
    registry, rest = image.split("/", 1)
    if "." not in registry and ":" not in registry and registry != "localhost":
        return None  # a Docker Hub path, not a registry: never matches an entry
    repository, _, digest = rest.partition("@")
    if not digest:
        repository = repository.rsplit(":", 1)[0]
    return registry, repository, digest or None


def _repository_matches(rule: str, repository: str) -> bool:
    """A '*' segment matches one segment; a final '**' one or more segments below."""
    wanted, given = rule.split("/"), repository.split("/")
    if wanted[-1] == "**":
        wanted = wanted[:-1]
        if len(given) <= len(wanted):
            return False
        given = given[: len(wanted)]
    if len(wanted) != len(given):
        return False
    return all(w in ("*", g) for w, g in zip(wanted, given, strict=True))


@dataclass(frozen=True)
class ImageRule:
    """An allowlist entry of custom images: registry, repository, digest pinning required."""

    registry: str
    repository: str
    digest: bool = False

    def allows(self, image: str) -> bool:
        parts = split_image(image)
        if parts is None:
            return False
        registry, repository, digest = parts
        return (
            registry == self.registry
            and _repository_matches(self.repository, repository)
            and (digest is not None or not self.digest)
        )


@dataclass(frozen=True)
class CustomImages:
    """Images users may type in, if they fully match one of the admin's patterns or are
    allowed by one of the allowlist's entries."""

    patterns: tuple[re.Pattern[str], ...] = ()
    kinds: tuple[str, ...] = ()
    allow: tuple[ImageRule, ...] = ()

    def allows(self, image: str) -> bool:
        return len(image) <= 256 and (
            any(p.fullmatch(image) for p in self.patterns)
            or any(rule.allows(image) for rule in self.allow)
        )
