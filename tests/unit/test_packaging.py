"""The product and the dev platform stay apart, and every import is a declared dependency.

The product (aiinfn_hub, the repository's pyproject.toml) is what a hub image installs; the dev
platform (aiinfn_dev, devplatform/pyproject.toml) depends on it and never the other way round.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Distribution names whose import name differs from the distribution's own.
IMPORT_NAMES = {
    "pyyaml": "yaml",
    "pyjwt": "jwt",
    "jupyterhub-kubespawner": "kubespawner",
    "kubernetes-asyncio": "kubernetes_asyncio",
}


def top_level_imports(package: Path) -> set[str]:
    """Every absolute top-level module a package's files import."""
    found = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def declared(pyproject: Path) -> set[str]:
    """Import names of a pyproject's runtime dependencies."""
    requirements = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    names = {
        re.split(r"[<>=!~ \[;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements
    }
    return {IMPORT_NAMES.get(name, name.replace("-", "_")) for name in names}


def third_party(imports: set[str], own: set[str]) -> set[str]:
    return {name for name in imports if name not in sys.stdlib_module_names and name not in own}


def test_the_product_never_imports_the_dev_platform():
    assert "aiinfn_dev" not in top_level_imports(REPO / "aiinfn_hub")
    assert not (REPO / "aiinfn_hub" / "devcluster").exists()


@pytest.mark.parametrize(
    "package,pyproject,own",
    [
        ("aiinfn_hub", "pyproject.toml", {"aiinfn_hub"}),
        ("devplatform/aiinfn_dev", "devplatform/pyproject.toml", {"aiinfn_dev", "aiinfn_hub"}),
    ],
)
def test_every_import_is_a_declared_dependency(package, pyproject, own):
    missing = third_party(top_level_imports(REPO / package), own) - declared(REPO / pyproject)
    assert not missing, f"{package} imports {sorted(missing)} without declaring them in {pyproject}"


def test_dev_only_dependencies_are_declared_by_the_dev_platform_only():
    product = declared(REPO / "pyproject.toml")
    assert not product & {"cryptography", "pytest", "selenium", "hypothesis"}
    assert (
        "optional-dependencies"
        not in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    )


def test_the_dev_platform_depends_on_the_product():
    requirements = tomllib.loads((REPO / "devplatform/pyproject.toml").read_text())["project"][
        "dependencies"
    ]
    assert any(r.startswith("aiinfn-hub") for r in requirements)
