"""Kernel specs made from environments. Pure: the dicts a kernel.json would hold.

A venv or conda environment's kernel is its own Python running ipykernel, with the
environment activated (its bin first on PATH); an Apptainer image's kernel is ipykernel run by
`apptainer exec` inside the image (the connection file's folder, under $HOME, is bound by
Apptainer's defaults).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .layout import Environment

ORIGINS = {"managed": "envs", "home": "home"}
LAUNCH = ("-m", "ipykernel_launcher", "-f", "{connection_file}")


def kernel_name(origin: str, name: str) -> str:
    """`envs-<name>` for a managed environment, `home-<name>` for the user's own."""
    return f"{ORIGINS[origin]}-{name}"


def reference(origin: str, name: str) -> str:
    """How jobs and `aiinfn envs` name it: envs/NAME or ~/envs/NAME."""
    return f"envs/{name}" if origin == "managed" else f"~/envs/{name}"


def _argv(environment: Environment, apptainer: Sequence[str]) -> list[str]:
    if environment.kind == "apptainer":
        image = str(Path(environment.path, environment.image))
        flags = ["--nv"] if environment.gpu else []
        return [*apptainer, "exec", *flags, image, "python", *LAUNCH]
    return [str(Path(environment.path, "bin", "python")), *LAUNCH]


def _env(environment: Environment) -> dict[str, str]:
    if environment.kind == "apptainer":
        return {}
    variable = "CONDA_PREFIX" if environment.kind == "conda" else "VIRTUAL_ENV"
    return {variable: environment.path, "PATH": f"{environment.path}/bin:${{PATH}}"}


def kernel_spec(
    environment: Environment, origin: str, apptainer: Sequence[str] = ("apptainer",)
) -> dict[str, Any]:
    """The kernel.json of an environment found under /envs (`managed`) or ~/envs (`home`)."""
    ref = reference(origin, environment.name)
    shown = (
        environment.display_name if origin == "managed" else f"{environment.display_name} (yours)"
    )
    return {
        "argv": _argv(environment, apptainer),
        "display_name": shown,
        "language": "python",
        "env": _env(environment),
        "metadata": {
            "aiinfn": {
                "environment": ref,
                "kind": environment.kind,
                "description": environment.description,
                "version": environment.version,
            }
        },
    }
