"""A curator's environment spec (YAML): what `aiinfn envs publish SPEC` builds. Pure.

    name: hello                       # lower-case letters, digits, '-'
    display_name: Hello (Python 3)    # shown in the launcher
    description: ...
    kind: venv                        # venv | conda | apptainer
    requirements: requirements.txt    # venv: every requirement pinned (==, or a file/URL)
    layer_on_base: false              # venv: also see the notebook image's packages
    environment: environment.yml      # conda: an environment file, every package pinned
    conda_command: [conda]            # conda: or [mamba], [micromamba]
    image: qml.sif                    # apptainer: an image built beforehand (docs)
    gpu: true                         # apptainer: run with --nv

Paths are relative to the spec's folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import layout
from .layout import Environment, LayoutError

_FIELDS = {
    "name",
    "display_name",
    "description",
    "kind",
    "requirements",
    "layer_on_base",
    "environment",
    "conda_command",
    "image",
    "gpu",
}
_OPTION = re.compile(r"^--?[a-z]")
_PINNED = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?\s*(===?|@)\s*\S")
_CONDA_PINNED = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(::)?[A-Za-z0-9._-]*\s*==?\s*[0-9]")


@dataclass(frozen=True)
class Spec:
    name: str
    display_name: str
    description: str
    kind: str
    folder: Path
    requirements: Path | None = None
    layer_on_base: bool = False
    conda_file: Path | None = None
    conda_command: tuple[str, ...] = ("conda",)
    image_file: Path | None = None
    gpu: bool = False

    @property
    def image_name(self) -> str:
        return "image.sif"

    def environment(self, path: str) -> Environment:
        """The metadata of what this spec builds (at `path`)."""
        return Environment(
            name=self.name,
            display_name=self.display_name,
            description=self.description,
            kind=self.kind,
            path=path,
            image=self.image_name if self.kind == "apptainer" else "",
            gpu=self.gpu,
        )


def unpinned_requirements(text: str) -> list[str]:
    """The lines of a requirements file that do not pin one version (or name a file/URL)."""
    bad = []
    for raw in text.splitlines():
        line = raw.split(" #")[0].strip()
        if not line or line.startswith("#") or _OPTION.match(line):
            continue
        if _PINNED.match(line) or line.endswith(".whl") or "://" in line:
            continue
        bad.append(line)
    return bad


def unpinned_conda(document: Any) -> list[str]:
    """The conda dependencies of an environment file that pin no version."""
    dependencies = document.get("dependencies", []) if isinstance(document, dict) else []
    bad = []
    for entry in dependencies:
        if isinstance(entry, dict):  # {pip: [...]}
            bad += unpinned_requirements("\n".join(map(str, entry.get("pip", []))))
        elif not _CONDA_PINNED.match(str(entry)):
            bad.append(str(entry))
    return bad


def _file(folder: Path, document: dict[str, Any], key: str) -> Path:
    value = document.get(key)
    if not isinstance(value, str) or not value:
        raise LayoutError(f"{key}: required for kind {document.get('kind')}")
    path = (folder / value).resolve()
    if not path.is_file():
        raise LayoutError(f"{key}: {path} is not a file")
    return path


def _kind_fields(folder: Path, document: dict[str, Any], kind: str) -> dict[str, Any]:
    if kind == "venv":
        requirements = _file(folder, document, "requirements")
        bad = unpinned_requirements(requirements.read_text())
        if bad:
            raise LayoutError(f"requirements not pinned (use ==): {', '.join(bad[:5])}")
        return {
            "requirements": requirements,
            "layer_on_base": document.get("layer_on_base") is True,
        }
    if kind == "conda":
        conda_file = _file(folder, document, "environment")
        bad = unpinned_conda(yaml.safe_load(conda_file.read_text()))
        if bad:
            raise LayoutError(f"conda packages not pinned: {', '.join(bad[:5])}")
        command = document.get("conda_command", ["conda"])
        if (
            not isinstance(command, list)
            or not command
            or not all(isinstance(c, str) for c in command)
        ):
            raise LayoutError("conda_command: a list of strings")
        return {"conda_file": conda_file, "conda_command": tuple(command)}
    return {"image_file": _file(folder, document, "image"), "gpu": document.get("gpu") is True}


def parse(document: Any, folder: Path) -> Spec:
    """A checked Spec (LayoutError names what is wrong)."""
    if not isinstance(document, dict):
        raise LayoutError("a spec is a YAML mapping")
    unknown = sorted(set(document) - _FIELDS)
    if unknown:
        raise LayoutError(f"unknown field(s): {', '.join(map(str, unknown))}")
    kind = document.get("kind", "venv")
    if kind not in layout.KINDS:
        raise LayoutError(f"kind: one of {', '.join(layout.KINDS)}")
    name = layout.check_name(str(document.get("name", "")))
    checked = layout.from_metadata(
        {k: document[k] for k in ("name", "display_name", "description") if k in document}
        | {"kind": kind, "image": "image.sif"},
        "",
    )
    return Spec(
        name=name,
        display_name=checked.display_name,
        description=checked.description,
        kind=kind,
        folder=folder,
        **_kind_fields(folder, document, kind),
    )


def load(path: str | Path) -> Spec:
    file = Path(path)
    try:
        document = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise LayoutError(f"cannot read the spec {file}: {error}") from None
    return parse(document, file.resolve().parent)
