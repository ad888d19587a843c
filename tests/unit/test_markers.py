"""The `hub` marker's rule (tests/hub_marker.py): the tests that ./dev test's 5.5 pass runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.hub_marker import HubIndex

REPO = Path(__file__).resolve().parents[2]

# A made-up package: every way the rule knows of reaching JupyterHub, and a pure neighbour.
PACKAGE = {
    "__init__.py": "",
    "shim.py": """
        try:
            from jupyterhub.spawner import SpawnException
        except ImportError:
            SpawnException = None

        class Refused(ValueError):
            pass

        def to_hub_error(error):
            return SpawnException(str(error))
    """,
    "pure.py": """
        from . import shim
        from .shim import Refused

        def check(value):
            if not value:
                raise Refused("empty")

        def convert(error):
            return shim.to_hub_error(error)
    """,
    "lazy.py": """
        def spawner_class():
            import kubespawner
            return kubespawner.KubeSpawner
    """,
    "runs.py": """
        import sys

        def command():
            return [sys.executable, "-m", "pkg.service"]
    """,
    "service/__init__.py": "",
    "service/__main__.py": """
        from oauthenticator.generic import GenericOAuthenticator

        if __name__ == "__main__":
            GenericOAuthenticator()
    """,
    "byname.py": """
        import importlib

        CLASSES = ("pkg.lazy",)

        def load():
            return [importlib.import_module(name) for name in CLASSES]
    """,
}


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> HubIndex:
    root = tmp_path_factory.mktemp("src") / "pkg"
    for name, text in PACKAGE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    return HubIndex(roots={"pkg": root}, imports_by_name=("pkg",))


@pytest.mark.parametrize(
    "node, hub",
    [
        (("sym", "pkg.shim", "SpawnException"), True),  # an import inside try/except
        (("sym", "pkg.shim", "to_hub_error"), True),
        (("sym", "pkg.shim", "Refused"), False),  # the module imports JupyterHub, the name does not
        (("sym", "pkg.pure", "check"), False),
        (("sym", "pkg.pure", "convert"), True),  # through `shim.to_hub_error`
        (("sym", "pkg.lazy", "spawner_class"), True),  # an import inside the function
        (("sym", "pkg.runs", "command"), True),  # `python -m pkg.service` runs its __main__
        (("sym", "pkg.byname", "load"), True),  # a dotted name in a string: importlib
        (("mod", "pkg.pure"), True),
        (("sym", "pkg.pure", "missing"), False),
    ],
)
def test_the_rule_follows_names_not_modules(index, node, hub):
    assert bool(index.hub([node])) is hub


def test_strings_are_data_outside_the_packages_named():
    index = HubIndex(roots={"tests": REPO / "tests"}, imports_by_name=())
    assert not index.hub([("mod", "tests.integration.test_hub_image_env")])


@pytest.mark.parametrize(
    "node, hub",
    [
        (("sym", "tests.hub", "start_hub"), True),  # `python -m jupyterhub`
        (("sym", "aiinfn_hub.errors", "to_http_error"), True),
        (("sym", "aiinfn_hub.errors", "UserError"), False),
        (("sym", "aiinfn_hub.spawner", "AiInfnSpawner"), True),
        (("sym", "tests.jobs_service", "Service"), True),  # the job service's HubOAuth
        (("mod", "tests.unit.test_podrunner_plan"), False),
        (("mod", "tests.integration.test_kueue"), False),
        (("mod", "tests.integration.test_inventory"), False),
        (("mod", "tests.e2e.test_incluster_hub"), False),  # the hub image's own JupyterHub
    ],
)
def test_the_repositorys_modules(node, hub):
    assert bool(HubIndex().hub([node])) is hub


def test_collection_marks_whole_files_or_single_tests():
    """What pass 2 leaves out: nothing of test_spawn.py, all of the pod runner's tests but the
    one that starts a hub, all of test_podrunner_plan.py."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            "not hub",
            "tests/integration/test_spawn.py",
            "tests/integration/test_podrunner.py",
            "tests/unit/test_podrunner_plan.py",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    files = {line.partition("::")[0] for line in done.stdout.splitlines() if "::" in line}
    assert files == {"tests/integration/test_podrunner.py", "tests/unit/test_podrunner_plan.py"}
    assert "::test_hub_spawns_a_real_jupyterlab" not in done.stdout
