"""Publishing, switching, retiring and cloning environments with real venvs and pip, offline:
the packages are wheels made in the test, the kernel's ipykernel comes from the notebook
environment (.venv-notebook) the managed environment layers on."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from aiinfn_dev.wheels import make_wheel

from aiinfn_hub.environments import build, cli, layout, specs
from aiinfn_hub.environments.layout import LayoutError

NOTEBOOK_PYTHON = Path(__file__).resolve().parents[2] / ".venv-notebook" / "bin" / "python"
pytestmark = pytest.mark.skipif(not NOTEBOOK_PYTHON.exists(), reason="no .venv-notebook")


def _spec(folder: Path, version: str) -> specs.Spec:
    wheel = make_wheel(folder, "hello_aiinfn", version, f"VERSION = {version!r}\n")
    (folder / "requirements.txt").write_text(f"{wheel.name}\n")
    (folder / "hello.yaml").write_text(
        "name: hello\ndisplay_name: Hello\ndescription: greets\n"
        "requirements: requirements.txt\nlayer_on_base: true\n"
    )
    return specs.load(folder / "hello.yaml")


def _python(prefix: Path | str, code: str) -> str:
    argv = [str(Path(prefix, "bin", "python")), "-c", code]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def published(tmp_path: Path) -> tuple[Path, layout.Environment]:
    root = tmp_path / "envs"
    root.mkdir()
    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    return root, build.publish(_spec(spec_dir, "1.0"), root, str(NOTEBOOK_PYTHON))


def test_publish_builds_a_version_and_links_the_name(published: tuple) -> None:
    root, environment = published
    link = root / "hello"
    assert link.is_symlink()
    assert os.readlink(link) == f".versions/hello-{environment.version}"
    assert _python(link, "import hello_aiinfn, ipykernel; print(hello_aiinfn.VERSION)") == "1.0"
    metadata = json.loads((link / layout.METADATA).read_text())
    assert metadata["name"] == "hello" and metadata["kind"] == "venv"
    assert [p.split(" @ ")[0] for p in metadata["packages"]] == ["hello_aiinfn"]
    assert oct(link.resolve().stat().st_mode & 0o777) == "0o755"
    assert oct((root / ".versions").stat().st_mode & 0o7777) == "0o2775"  # any curator publishes


def test_republish_switches_and_retire_keeps_the_versions(published: tuple, tmp_path: Path) -> None:
    root, first = published
    second = build.publish(_spec(tmp_path / "spec", "2.0"), root, str(NOTEBOOK_PYTHON))
    assert _python(root / "hello", "import hello_aiinfn; print(hello_aiinfn.VERSION)") == "2.0"
    kept = build.retire(root, "hello")
    assert not os.path.lexists(root / "hello")
    assert kept.name == f"hello-{second.version}"
    assert sorted(p.name for p in (root / ".versions").iterdir()) == sorted(
        [f"hello-{first.version}", f"hello-{second.version}"]
    )
    assert [p.name for p in root.iterdir()] == [".versions"]  # no temporary links left
    with pytest.raises(build.BuildError, match="not a published environment"):
        build.retire(root, "hello")


def test_failed_build_leaves_the_published_version(published: tuple, tmp_path: Path) -> None:
    root, first = published
    (tmp_path / "spec" / "requirements.txt").write_text("missing-1.0-py3-none-any.whl\n")
    with pytest.raises(build.BuildError, match="installing the requirements failed"):
        build.publish(specs.load(tmp_path / "spec" / "hello.yaml"), root, str(NOTEBOOK_PYTHON))
    assert os.readlink(root / "hello") == f".versions/hello-{first.version}"
    assert len(list((root / ".versions").iterdir())) == 1


def test_clone_layers_on_the_managed_version_and_adds(published: tuple, tmp_path: Path) -> None:
    root, first = published
    extra = make_wheel(tmp_path, "extra_aiinfn", "3.0", "VALUE = 42\n")
    mine = build.clone(
        layout.read(root / "hello"), tmp_path / "home" / "envs" / "mine", [str(extra)]
    )
    code = "import hello_aiinfn as h, extra_aiinfn as e, ipykernel; print(h.VERSION, e.VALUE)"
    assert _python(mine.path, code) == "1.0 42"
    assert mine.base == str(root / ".versions" / f"hello-{first.version}")
    assert [p.split(" @ ")[0] for p in mine.packages] == ["extra_aiinfn"]  # nothing copied
    assert layout.read(mine.path) == mine
    build.retire(root, "hello")  # the clone keeps its version
    assert _python(mine.path, "import hello_aiinfn; print(hello_aiinfn.VERSION)") == "1.0"
    with pytest.raises(LayoutError, match="already exists"):
        build.clone(layout.read(mine.path), Path(mine.path))
    with pytest.raises(LayoutError, match="not a requirement or a file"):
        build.clone(layout.read(mine.path), tmp_path / "other", ["--index-url=http://x"])


def test_cli_lists_clones_and_refuses_unknown(published: tuple, tmp_path: Path, capsys) -> None:
    root, _ = published
    env = {"AIINFN_ENVS_ROOT": str(root), "HOME": str(tmp_path / "home")}
    parser = __import__("aiinfn_hub.cli", fromlist=["parser"]).parser()
    assert cli.main(parser.parse_args(["envs", "clone", "hello", "mine"]), env) == 0
    assert cli.main(parser.parse_args(["--json", "envs", "list"]), env) == 0
    out = capsys.readouterr().out
    listing = json.loads(out[out.index('{\n  "environments"') :])
    assert [(e["ref"], e["kernel"]) for e in listing["environments"]] == [
        ("envs/hello", "envs-hello"),
        ("~/envs/mine", "home-mine"),
    ]
    assert cli.main(parser.parse_args(["envs", "clone", "nope", "other"]), env) == 1
    assert "no environment 'nope'" in capsys.readouterr().err


STAND_IN_CONDA = """\
import pathlib, subprocess, sys, sysconfig
args = sys.argv[1:]
if args[:2] == ["env", "create"]:  # a venv that sees the notebook environment, as conda would
    prefix = pathlib.Path(args[args.index("--prefix") + 1])
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix)], check=True)
    (prefix / "conda-meta").mkdir()
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = subprocess.run([str(prefix / "bin" / "python"), "-c", code], capture_output=True,
                          text=True, check=True).stdout.strip()
    base = sysconfig.get_paths()["purelib"]
    pathlib.Path(site, "_base.pth").write_text(f"import site; site.addsitedir({base!r})\\n")
elif args[:1] == ["list"]:
    print("# platform: linux-64\\npython=3.11.7=0\\nipykernel=7.4.0=0")
"""


def test_conda_spec_is_built_by_its_conda_command(tmp_path: Path) -> None:
    conda = tmp_path / "conda"
    conda.write_text(f"#!{NOTEBOOK_PYTHON}\n{STAND_IN_CONDA}")
    conda.chmod(0o755)
    (tmp_path / "environment.yml").write_text("dependencies: [python=3.11.7, ipykernel=7.4.0]\n")
    (tmp_path / "qml.yaml").write_text(
        f"name: qml\nkind: conda\nenvironment: environment.yml\nconda_command: [{conda}]\n"
    )
    root = tmp_path / "envs"
    root.mkdir()
    made = build.publish(specs.load(tmp_path / "qml.yaml"), root)
    assert (made.kind, made.packages) == ("conda", ("python=3.11.7=0", "ipykernel=7.4.0=0"))
    assert layout.read(root / "qml") == made
    mine = build.clone(made, tmp_path / "home" / "mine")
    assert _python(mine.path, "import ipykernel; print('ok')") == "ok"


def test_apptainer_spec_copies_its_image(tmp_path: Path) -> None:
    (tmp_path / "qml.sif").write_bytes(b"SIF stand-in")
    (tmp_path / "qml.yaml").write_text("name: qml\nkind: apptainer\nimage: qml.sif\ngpu: true\n")
    root = tmp_path / "envs"
    root.mkdir()
    made = build.publish(specs.load(tmp_path / "qml.yaml"), root)
    assert (made.kind, made.image, made.gpu, made.packages) == ("apptainer", "image.sif", True, ())
    assert (root / "qml" / "image.sif").read_bytes() == b"SIF stand-in"
    with pytest.raises(LayoutError, match="cannot be cloned"):
        build.clone(layout.read(root / "qml"), tmp_path / "mine")
