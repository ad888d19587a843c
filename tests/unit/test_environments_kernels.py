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


# Apptainer is not installable here: this stand-in does what `apptainer exec [--nv] IMAGE CMD`
# does for a kernel (runs CMD, `python` being the image's), and says which image it "entered".
STAND_IN_APPTAINER = """\
import os, sys
args = sys.argv[1:]
assert args.pop(0) == "exec", args
gpu = args[0] == "--nv"
image, command = args[gpu:][0], args[gpu:][1:]
if not os.path.isfile(image):
    sys.exit(f"FATAL: could not open image {image}")
os.environ.update(APPTAINER_CONTAINER=image, STAND_IN_NV=str(int(gpu)))
command[0] = sys.executable if command[0] == "python" else command[0]
os.execv(command[0], command)
"""

KERNEL_SCRIPT = """
import json, sys
from jupyter_client.manager import KernelManager
from aiinfn_hub.environments.kernels import AiInfnKernelSpecManager
specs = AiInfnKernelSpecManager(managed_root=sys.argv[1], user_root=sys.argv[1] + "/none",
                                apptainer_command=[sys.argv[2]])
manager = KernelManager(kernel_name="envs-qml", kernel_spec_manager=specs)
manager.start_kernel()
client = manager.client()
client.start_channels()
printed = []
try:
    client.wait_for_ready(timeout=60)
    code = "import os; print(os.environ['APPTAINER_CONTAINER'], os.environ['STAND_IN_NV'])"
    client.execute_interactive(code, timeout=60, output_hook=lambda m: printed.append(
        m["content"].get("text", "") if m["msg_type"] == "stream" else ""))
finally:
    client.stop_channels()
    manager.shutdown_kernel(now=True)
print(json.dumps("".join(printed)))
"""


def test_an_apptainer_environment_is_a_kernel_run_by_apptainer_exec(tmp_path: Path) -> None:
    stand_in = tmp_path / "apptainer"
    stand_in.write_text(f"#!{NOTEBOOK_PYTHON}\n{STAND_IN_APPTAINER}")
    stand_in.chmod(0o755)
    _env(tmp_path / "envs" / "qml", "qml", kind="apptainer", image="image.sif", gpu=True)
    (tmp_path / "envs" / "qml" / "image.sif").write_bytes(b"SIF stand-in")
    result = subprocess.run(
        [str(NOTEBOOK_PYTHON), "-c", KERNEL_SCRIPT, str(tmp_path / "envs"), str(stand_in)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == f"{tmp_path}/envs/qml/image.sif 1\n"
