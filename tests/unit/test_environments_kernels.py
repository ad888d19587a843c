"""AiInfnKernelSpecManager in the notebook environment (jupyter_client lives there, not in the
test environment): environments appear and go without a new manager."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from aiinfn_hub.environments import layout

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK_PYTHON = REPO / ".venv-notebook" / "bin" / "python"
pytestmark = pytest.mark.skipif(not NOTEBOOK_PYTHON.exists(), reason="no .venv-notebook")

SCRIPT = """
import json, os, sys
from aiinfn_hub.environments.kernels import AiInfnKernelSpecManager
manager = AiInfnKernelSpecManager(managed_root=sys.argv[1], user_root=sys.argv[2])
seen = [sorted(manager.get_all_specs())]
os.rename(sys.argv[3], os.path.join(sys.argv[1], "later"))
seen.append(sorted(manager.get_all_specs()))
seen.append(sorted(manager.find_kernel_specs()))
spec = manager.get_kernel_spec("home-mine")
seen.append([spec.display_name, spec.argv[0], spec.env["VIRTUAL_ENV"], spec.resource_dir])
print(json.dumps(seen))
"""


def _env(folder: Path, name: str, **extra: object) -> None:
    folder.mkdir(parents=True)
    metadata = {"name": name, "kind": "venv", "display_name": name.title(), **extra}
    (folder / layout.METADATA).write_text(json.dumps(metadata))


def test_environments_are_kernels_found_again_on_each_request(tmp_path: Path) -> None:
    _env(tmp_path / "envs" / "hello", "hello")
    _env(tmp_path / "home" / "mine", "mine")
    _env(tmp_path / "staging" / "later", "later")
    result = subprocess.run(
        [str(NOTEBOOK_PYTHON), "-c", SCRIPT, str(tmp_path / "envs"), str(tmp_path / "home"),
         str(tmp_path / "staging" / "later")],
        capture_output=True, text=True, check=True, cwd=REPO,
    )  # fmt: skip
    before, after, names, mine = json.loads(result.stdout)
    assert set(before) - {"python3"} == {"envs-hello", "home-mine"}
    assert set(after) - {"python3"} == {"envs-hello", "envs-later", "home-mine"}
    assert names == after
    assert mine == [
        "Mine (yours)",
        str(tmp_path / "home" / "mine" / "bin" / "python"),
        str(tmp_path / "home" / "mine"),
        str(tmp_path / "home" / "mine"),
    ]


def test_shipped_jupyter_config_names_the_manager() -> None:
    config = json.loads((REPO / "images/notebook/jupyter/jupyter_server_config.json").read_text())
    assert config["ServerApp"]["kernel_spec_manager_class"] == (
        "aiinfn_hub.environments.kernels.AiInfnKernelSpecManager"
    )
