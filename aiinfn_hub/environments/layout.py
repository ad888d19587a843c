"""Where environments live and what their metadata file says. Pure: reads, never writes.

An environment is a directory holding `aiinfn-env.json` (name, display name, description,
kind, and what it contains). Managed ones are `/envs/<name>`, a symlink to a real directory
`/envs/.versions/<name>-<stamp>/` that `aiinfn envs publish` switches in one rename; a user's
own are `~/envs/<name>`. A job names one as `envs/<name>` or `~/envs/<name>`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

METADATA = "aiinfn-env.json"
VERSIONS = ".versions"
KINDS = ("venv", "conda", "apptainer")
NAME_RULE = "lower-case letters, digits and '-', at most 40, not starting or ending with '-'"
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
MAX_METADATA_BYTES = 1024 * 1024
MAX_TEXT = 500
MANAGED_PREFIX = "envs/"
HOME_PREFIX = "~/envs/"


class LayoutError(ValueError):
    """A bad name, reference or metadata file (the message is for the user)."""


@dataclass(frozen=True)
class Environment:
    """One environment as its metadata file describes it; `path` is where it was found."""

    name: str
    display_name: str
    description: str
    kind: str
    path: str
    image: str = ""  # apptainer: the image file's name inside `path`
    gpu: bool = False  # apptainer: run with --nv
    base: str = ""  # a clone: the (resolved) managed environment it layers on
    version: str = ""
    packages: tuple[str, ...] = ()

    def metadata(self) -> dict[str, Any]:
        """The metadata file's content (`path` is where it lies, so not in it)."""
        document: dict[str, Any] = {
            "name": self.name,
            "display_name": self.display_name,
            "description": self.description,
            "kind": self.kind,
            "version": self.version,
            "packages": list(self.packages),
        }
        for key in ("image", "gpu", "base"):
            if getattr(self, key):
                document[key] = getattr(self, key)
        return document


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise LayoutError(f"invalid environment name {name[:50]!r}: {NAME_RULE}")
    return name


def _text(document: dict[str, Any], key: str, default: str = "") -> str:
    value = document.get(key, default)
    if not isinstance(value, str) or len(value) > MAX_TEXT or "\x00" in value:
        raise LayoutError(f"{key}: a string of at most {MAX_TEXT} characters")
    return value


def from_metadata(document: Any, path: str) -> Environment:
    """The Environment a metadata document describes, checked (found at `path`)."""
    if not isinstance(document, dict):
        raise LayoutError("the metadata file is not a JSON object")
    kind = _text(document, "kind")
    if kind not in KINDS:
        raise LayoutError(f"kind: one of {', '.join(KINDS)}")
    image = _text(document, "image")
    if kind == "apptainer" and (not image or "/" in image or image.startswith(".")):
        raise LayoutError("image: an apptainer environment names its image file in its folder")
    packages = document.get("packages", [])
    if not isinstance(packages, list) or not all(isinstance(p, str) for p in packages):
        raise LayoutError("packages: a list of strings")
    name = check_name(document.get("name", ""))
    return Environment(
        name=name,
        display_name=_text(document, "display_name", name) or name,
        description=_text(document, "description"),
        kind=kind,
        path=path,
        image=image,
        gpu=document.get("gpu") is True,
        base=_text(document, "base"),
        version=_text(document, "version"),
        packages=tuple(packages),
    )


def read(path: str | Path) -> Environment:
    """The environment in folder `path` (OSError when unreadable, LayoutError when bad)."""
    file = Path(path, METADATA)
    with open(file, "rb") as stream:
        data = stream.read(MAX_METADATA_BYTES + 1)
    if len(data) > MAX_METADATA_BYTES:
        raise LayoutError(f"{file}: larger than {MAX_METADATA_BYTES} bytes")
    try:
        document = json.loads(data)
    except ValueError:
        raise LayoutError(f"{file}: not JSON") from None
    environment = from_metadata(document, str(path))
    if environment.name != Path(path).name:
        raise LayoutError(f"{file}: names {environment.name!r}, not its folder's name")
    return environment


def scan(root: str | Path) -> tuple[list[Environment], list[str]]:
    """Every environment directly under `root` (by name), and why others were skipped. A
    missing root has none: not every pod mounts /envs."""
    try:
        entries = sorted(os.listdir(root))
    except (FileNotFoundError, NotADirectoryError):
        return [], []
    except OSError as error:
        return [], [f"{root}: {error.strerror}"]
    found, skipped = [], []
    for entry in entries:
        if entry.startswith(".") or not _NAME.fullmatch(entry):
            continue
        folder = Path(root, entry)
        if not Path(folder, METADATA).is_file():
            continue
        try:
            found.append(read(folder))
        except (OSError, LayoutError) as error:
            skipped.append(f"{folder}: {error}")
    return found, skipped


def parse_reference(text: str) -> tuple[str, str] | None:
    """('managed' | 'home', name) for `envs/NAME` or `~/envs/NAME`; None for anything else
    (a catalog key). A reference with a bad name is a LayoutError."""
    for prefix, origin in ((MANAGED_PREFIX, "managed"), (HOME_PREFIX, "home")):
        if text.startswith(prefix):
            return origin, check_name(text[len(prefix) :])
    return None
