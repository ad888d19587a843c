"""The hub image's Python environment, made without a container engine: images/hub/make-env.sh
puts what images/hub/Dockerfile adds to the chart's hub image (the pinned requirements and the
product's wheel) into a clean virtualenv, which ./dev keeps in .venv-hub.

There every entry point the product declares loads, the hub configuration (jupyterhub_config.d)
runs as the chart's jupyterhub_config.py runs it, and the dev platform is absent. No cluster is
needed; each test runs one short Python process in that environment.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HUB_ENV = Path(os.environ.get("AIINFN_HUB_ENV") or REPO / ".venv-hub")
PYTHON = HUB_ENV / "bin" / "python"
# What the product must offer a hub whatever else it declares.
REQUIRED = {
    ("console_scripts", "aiinfn"),
    ("console_scripts", "aiinfn-hub"),
    ("jupyterhub.spawners", "aiinfn"),
    ("jupyterhub.authenticators", "aiinfn"),
}
# A virtualenv's own tools, not part of what the image adds.
VENV_TOOLS = {"pip", "setuptools"}

pytestmark = pytest.mark.skipif(
    not PYTHON.exists(),
    reason=f"no hub image environment at {HUB_ENV}: ./dev makes it "
    f"(images/hub/make-env.sh {HUB_ENV.name})",
)

LOAD_ENTRY_POINTS = """
import importlib.metadata, json
failed = {}
points = importlib.metadata.distribution("aiinfn-hub").entry_points
for point in points:
    try:
        point.load()
    except Exception as e:
        failed[f"{point.group}:{point.name}"] = repr(e)
print(json.dumps({"declared": [[p.group, p.name] for p in points], "failed": failed}))
"""

IMPORT = """
import importlib, json, sys
try:
    importlib.import_module(sys.argv[1])
    print(json.dumps(None))
except ImportError as e:
    print(json.dumps(type(e).__name__))
"""

# The chart's jupyterhub_config.py runs each jupyterhub_config.d/*.py in name order with exec, in
# a namespace holding the hub's config object `c`.
RUN_CONFIG = """
import glob, json, os, sys
from traitlets.config import Config
c = Config()
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.py"))):
    with open(path) as f:
        exec(compile(f.read(), os.path.basename(path), "exec"), {"c": c, "__name__": "__main__"})
print(json.dumps({
    "spawner": c.JupyterHub.spawner_class,
    "authenticator": c.JupyterHub.authenticator_class,
    "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("aiinfn_hub", "aiinfn_dev")),
}))
"""


def run(code: str, *args: str):
    """Run code in the hub environment (its working directory outside the checkout, so only the
    installed product can be imported) and return what it printed as JSON."""
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/")}
    done = subprocess.run(
        [str(PYTHON), "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=HUB_ENV,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def declared_in_pyproject() -> set[tuple[str, str]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    points = {("console_scripts", name) for name in project.get("scripts", {})}
    for group, entries in project.get("entry-points", {}).items():
        points |= {(group, name) for name in entries}
    return points


def test_every_entry_point_of_the_product_loads():
    result = run(LOAD_ENTRY_POINTS)
    declared = {tuple(p) for p in result["declared"]}
    assert REQUIRED <= declared
    assert declared == declared_in_pyproject(), "the environment's product is not this checkout's"
    assert result["failed"] == {}


@pytest.mark.parametrize("module", ["aiinfn_hub.devcluster", "aiinfn_dev", "aiinfn_dev.devcluster"])
def test_the_dev_platform_is_not_there(module):
    assert run(IMPORT, module) == "ModuleNotFoundError"


def test_the_product_itself_imports():
    assert run(IMPORT, "aiinfn_hub.services.jobs.app") is None


def test_the_hub_configuration_runs_as_the_chart_runs_it():
    result = run(RUN_CONFIG, str(REPO / "jupyterhub_config.d"))
    assert (result["spawner"], result["authenticator"]) == ("aiinfn", "aiinfn")
    assert not [m for m in result["loaded"] if m.startswith("aiinfn_dev")]


def test_the_environment_is_the_pinned_requirements_and_the_product():
    installed = run(
        "import importlib.metadata as m, json; "
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
    )
    canonical = {re.sub(r"[-_.]+", "-", name).lower(): v for name, v in installed.items()}
    pinned = {}
    for line in (REPO / "images" / "hub" / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pinned[name] = version
    product = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    ours = {name: v for name, v in canonical.items() if name not in VENV_TOOLS}
    assert ours == {**pinned, "aiinfn-hub": product}
