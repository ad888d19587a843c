"""Pin an image folder's requirements: images/FOLDER/requirements.in -> requirements.txt.

    python3.12 images/freeze.py FOLDER [-c CONSTRAINTS.txt ...] [--also-python PYTHON ...]

Run from the repository root with the images' Python (3.12) on Linux x86_64, the platform the
images are built for. pip's resolver runs as a dry run: nothing is installed, only package
metadata is read from the index. The requirements.txt of every image FOLDER builds FROM are
constraints, so an image never changes a package of its base; requirements.txt then lists what
FOLDER adds, each pinned with ==. Images that install the product (the hub and the notebook
base) resolve its dependencies (pyproject.toml) too. Extra -c files constrain further (the hub:
the chart's hub image's own requirements.txt, images/README.md "Pins"), except for the packages
requirements.in pins itself: those pins win. Each --also-python (the dev cluster's notebook
environment may run another Python) resolves again there with the same pins, and what only that
Python needs is added with a python_version marker.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

IMAGES = Path(__file__).resolve().parent
ROOT = IMAGES.parent
# The image folders whose Dockerfile installs the product's wheel.
PRODUCT_FOLDERS = {"hub", "notebook"}
# FROM ${REGISTRY}/<folder>:<tag>: an image built on another image of this folder.
OWN_BASE = re.compile(r"^FROM\s+\$\{REGISTRY\}/([a-z0-9-]+):\S+\s*$", re.MULTILINE)
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)\s*$")


def base_folders(folder: str) -> list[str]:
    """The image folders FOLDER builds on, nearest first."""
    found = OWN_BASE.findall((IMAGES / folder / "Dockerfile").read_text())
    return found + base_folders(found[-1]) if found else []


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    """name -> version of the unconditional pins of a requirements file."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return {canonical(m[1]): m[2] for m in map(PIN.match, lines) if m}


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def without(path: Path, names: set[str], tmp: Path) -> Path:
    """A copy of a constraints file less the lines that pin one of names."""
    lines = [
        line
        for line in path.read_text().splitlines()
        if not ((m := PIN.match(line.strip())) and canonical(m[1]) in names)
    ]
    return write(tmp / f"{len(list(tmp.iterdir()))}-{path.name}", lines)


def resolve(python: str, requirements: list[str], constraints: list[Path]) -> dict[str, str]:
    """What pip would install with python for requirements under constraints, from scratch."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run(
            [
                python,
                "-m",
                "pip",
                "install",
                "--dry-run",
                "--ignore-installed",
                "--quiet",
                "--report",
                str(report),
                *requirements,
                *(f"--constraint={c}" for c in constraints),
            ],
            check=True,
        )
        installs = json.loads(report.read_text())["install"]
    return {canonical(i["metadata"]["name"]): i["metadata"]["version"] for i in installs}


def python_version(python: str) -> str:
    code = "import sys; print('%d.%d' % sys.version_info[:2])"
    done = subprocess.run([python, "-c", code], check=True, capture_output=True, text=True)
    return done.stdout.strip()


def freeze(folder: str, constraints: list[Path], also: list[str]) -> list[str]:
    """The requirement lines of folder's requirements.txt."""
    bases = [IMAGES / b / "requirements.txt" for b in base_folders(folder)]
    requirements = ["-r", str(IMAGES / folder / "requirements.in")]
    if folder in PRODUCT_FOLDERS:
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        requirements += project["dependencies"]
    below = {name for path in bases for name in pins(path)}
    own = set(pins(IMAGES / folder / "requirements.in"))
    with tempfile.TemporaryDirectory() as tmp:
        extra = [without(path, own, Path(tmp)) for path in constraints]
        resolved = resolve(sys.executable, requirements, bases + extra)
        lines = [f"{name}=={resolved[name]}" for name in sorted(resolved) if name not in below]
        same = write(Path(tmp) / "resolved.txt", [f"{n}=={v}" for n, v in resolved.items()])
        for python in also:
            there = resolve(python, requirements, bases + extra + [same])
            marker = f'python_version == "{python_version(python)}"'
            lines += [f"{n}=={v} ; {marker}" for n, v in sorted(there.items()) if n not in resolved]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder")
    parser.add_argument("-c", "--constraint", action="append", type=Path, default=[])
    parser.add_argument("--also-python", action="append", default=[])
    args = parser.parse_args()
    lines = freeze(args.folder, args.constraint, args.also_python)
    version = python_version(sys.executable)
    platform = f"Python {version}, Linux x86_64"
    header = [
        f"# Frozen by images/freeze.py from requirements.in ({platform}):",
        "# what this image installs over its base, each pinned. Edit requirements.in, then",
        "# run it again.",
    ]
    write(IMAGES / args.folder / "requirements.txt", header + lines)
    print(f"images/{args.folder}/requirements.txt: {len(lines)} pins")


if __name__ == "__main__":
    main()
