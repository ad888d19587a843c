"""Making environments: publish (curators, into /envs), retire, clone (users, into ~/envs).

Publishing builds a new version beside the old ones, `.versions/<name>-<stamp>/`, and then
switches the name's symlink to it in one rename: a kernel or job starting meanwhile sees the
old version or the new one, never half of one. A clone is a virtualenv whose site-packages
holds a `.pth` file that adds the managed version's site-packages after its own: nothing is
copied, the clone's own packages win, and it keeps working when the name is switched or
retired (versions are kept for the clones that layer on them).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from . import layout
from .layout import Environment, LayoutError
from .specs import Spec

LAYER_PTH = "_aiinfn_layer.pth"
PIP = (sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input")


class BuildError(Exception):
    """A step failed (the message says which, with the tool's last lines)."""


def _run(argv: Sequence[str], step: str, cwd: Path | None = None) -> str:
    result = subprocess.run(list(argv), capture_output=True, text=True, check=False, cwd=cwd)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise BuildError(f"{step} failed (exit {result.returncode}):\n{tail}")
    return result.stdout


@contextlib.contextmanager
def _readable() -> Iterator[None]:
    """Files made meanwhile are readable by everyone (a curator's umask may say otherwise)."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def site_packages(prefix: Path) -> Path:
    """The environment's pure-Python site-packages, as its own Python says."""
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(_run([str(prefix / "bin" / "python"), "-c", code], "finding site-packages").strip())


def _make_venv(prefix: Path, python: str) -> None:
    _run([python, "-m", "venv", "--without-pip", str(prefix)], "creating the virtualenv")


def _layer(prefix: Path, base_site: Path) -> None:
    """Let the environment see `base_site` (and whatever it layers on) after its own packages."""
    line = f"import site; site.addsitedir({str(base_site)!r})\n"
    (site_packages(prefix) / LAYER_PTH).write_text(line)


def _pip_install(prefix: Path, args: Sequence[str], step: str, cwd: Path | None = None) -> None:
    _run([*PIP, "--python", str(prefix / "bin" / "python"), "install", *args], step, cwd)


def freeze(prefix: Path, conda: Sequence[str] = ("conda",)) -> tuple[str, ...]:
    """What the environment itself holds (not what it layers on), as pinned requirements."""
    if (prefix / "conda-meta").is_dir():
        out = _run([*conda, "list", "--prefix", str(prefix), "--export"], "listing packages")
    else:
        site = site_packages(prefix)
        out = _run([*PIP, "freeze", "--path", str(site)], "listing packages")
    return tuple(line for line in out.splitlines() if line and not line.startswith("#"))


def _stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(2)


def switch(root: Path, name: str, version_dir: Path) -> None:
    """Point root/name at version_dir (relative link) in one rename."""
    link = root / name
    if link.exists() and not link.is_symlink():
        raise BuildError(f"{link} is a real folder, not a published environment's link")
    temporary = root / f".{name}.{secrets.token_hex(4)}.tmp"
    os.symlink(os.path.relpath(version_dir, root), temporary)
    os.replace(temporary, link)


def _build(spec: Spec, prefix: Path, base_python: str) -> None:
    if spec.kind == "venv":
        _make_venv(prefix, base_python)
        if spec.layer_on_base:
            code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
            _layer(prefix, Path(_run([base_python, "-c", code], "finding the base").strip()))
        _pip_install(
            prefix, ["-r", str(spec.requirements)], "installing the requirements", spec.folder
        )
    elif spec.kind == "conda":
        create = ["env", "create", "--prefix", str(prefix), "--file"]
        _run([*spec.conda_command, *create, str(spec.conda_file)], "creating the conda env")
    else:
        prefix.mkdir()
        shutil.copyfile(str(spec.image_file), prefix / spec.image_name)
    if spec.kind != "apptainer":
        check = [str(prefix / "bin" / "python"), "-c", "import ipykernel"]
        _run(check, "checking ipykernel (a kernel needs it: add it to the requirements)")


def publish(spec: Spec, root: Path, base_python: str = sys.executable) -> Environment:
    """Build `spec` as a new version under root/.versions and switch root/NAME to it."""
    versions = root / layout.VERSIONS
    stamp = _stamp()
    prefix = versions / f"{spec.name}-{stamp}"
    with _readable():
        try:
            versions.mkdir()
            versions.chmod(0o2775)  # every curator (the group /envs is made for) publishes here
        except FileExistsError:
            pass
        try:
            _build(spec, prefix, base_python)
            packages = () if spec.kind == "apptainer" else freeze(prefix, spec.conda_command)
            environment = replace(
                spec.environment(str(root / spec.name)), version=stamp, packages=packages
            )
            (prefix / layout.METADATA).write_text(json.dumps(environment.metadata(), indent=1))
        except BaseException:
            shutil.rmtree(prefix, ignore_errors=True)
            raise
        switch(root, spec.name, prefix)
    return environment


def retire(root: Path, name: str) -> Path:
    """Remove the name (kernels and new jobs stop seeing it); its versions stay for clones."""
    link = root / layout.check_name(name)
    if not link.is_symlink():
        raise BuildError(f"{link} is not a published environment")
    target = link.resolve()
    link.unlink()
    return target


_PACKAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-\[\],<>=!~ ]{0,200}$")


def clone(source: Environment, target: Path, add: Sequence[str] = ()) -> Environment:
    """A virtualenv at `target` layered on `source` (venv or conda) plus the `add` packages."""
    if source.kind == "apptainer":
        raise LayoutError("an Apptainer environment cannot be cloned; build an image on it")
    for package in add:
        if not (_PACKAGE.fullmatch(package) or Path(package).is_file()):
            raise LayoutError(f"not a requirement or a file: {package[:80]!r}")
    if os.path.lexists(target):
        raise LayoutError(f"{target} already exists")
    base = Path(source.path).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        _make_venv(target, str(base / "bin" / "python"))
        _layer(target, site_packages(base))
        if add:
            _pip_install(target, list(add), "installing the added packages")
        added = "".join(f" + {Path(p).name}" for p in add)
        environment = Environment(
            name=layout.check_name(target.name),
            display_name=f"{target.name} (from {source.display_name})"[: layout.MAX_TEXT],
            description=f"{source.name} {source.version}{added}"[: layout.MAX_TEXT],
            kind="venv",
            path=str(target),
            base=str(base),
            version=_stamp(),
            packages=freeze(target),
        )
        (target / layout.METADATA).write_text(json.dumps(environment.metadata(), indent=1))
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return environment
