"""Environment metadata, scanning, job references, kernel specs and curators' specs (pure)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aiinfn_hub.environments import kernelspecs, layout, specs
from aiinfn_hub.environments.layout import Environment, LayoutError


def _write(folder: Path, **document: object) -> Path:
    folder.mkdir(parents=True)
    (folder / layout.METADATA).write_text(json.dumps(document))
    return folder


def test_scan_lists_environments_by_name_and_says_why_others_are_skipped(tmp_path: Path) -> None:
    _write(tmp_path / "b-env", name="b-env", kind="venv", display_name="B")
    _write(tmp_path / "a-env", name="a-env", kind="conda")
    _write(tmp_path / "wrong", name="other", kind="venv")
    _write(tmp_path / "bad-kind", name="bad-kind", kind="docker")
    _write(tmp_path / ".versions" / "x", name="x", kind="venv")
    (tmp_path / "no-metadata").mkdir()
    (tmp_path / "Upper").mkdir()
    found, skipped = layout.scan(tmp_path)
    assert [(e.name, e.kind, e.display_name) for e in found] == [
        ("a-env", "conda", "a-env"),
        ("b-env", "venv", "B"),
    ]
    assert [s.split(":")[0] for s in skipped] == [
        str(tmp_path / "bad-kind"),
        str(tmp_path / "wrong"),
    ]
    assert layout.scan(tmp_path / "missing") == ([], [])


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ([], "not a JSON object"),
        ({"name": "x", "kind": "venv", "display_name": 3}, "display_name"),
        ({"name": "x", "kind": "venv", "description": "d" * 501}, "description"),
        ({"name": "x", "kind": "apptainer"}, "image"),
        ({"name": "x", "kind": "apptainer", "image": "../a.sif"}, "image"),
        ({"name": "x", "kind": "venv", "packages": [1]}, "packages"),
        ({"name": "-x", "kind": "venv"}, "invalid environment name"),
    ],
)
def test_bad_metadata_is_refused_naming_the_field(document: object, problem: str) -> None:
    with pytest.raises(LayoutError, match=problem):
        layout.from_metadata(document, "/envs/x")


def test_references() -> None:
    assert layout.parse_reference("envs/hello") == ("managed", "hello")
    assert layout.parse_reference("~/envs/my-env") == ("home", "my-env")
    assert layout.parse_reference("ml-gpu") is None
    for bad in ("envs/../x", "~/envs/", "envs/A", "~/envs/a/b"):
        with pytest.raises(LayoutError):
            layout.parse_reference(bad)


def test_venv_kernel_spec_activates_the_environment() -> None:
    environment = Environment("hello", "Hello", "greets", "venv", "/envs/hello", version="v1")
    assert kernelspecs.kernel_name("managed", "hello") == "envs-hello"
    assert kernelspecs.kernel_spec(environment, "managed") == {
        "argv": ["/envs/hello/bin/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Hello",
        "language": "python",
        "env": {"VIRTUAL_ENV": "/envs/hello", "PATH": "/envs/hello/bin:${PATH}"},
        "metadata": {
            "aiinfn": {
                "environment": "envs/hello",
                "kind": "venv",
                "description": "greets",
                "version": "v1",
            }
        },
    }


def test_conda_and_apptainer_kernel_specs() -> None:
    conda = Environment("mine", "Mine", "", "conda", "/home/jovyan/envs/mine")
    spec = kernelspecs.kernel_spec(conda, "home")
    assert kernelspecs.kernel_name("home", "mine") == "home-mine"
    assert spec["display_name"] == "Mine (yours)"
    assert spec["env"] == {
        "CONDA_PREFIX": "/home/jovyan/envs/mine",
        "PATH": "/home/jovyan/envs/mine/bin:${PATH}",
    }
    assert spec["metadata"]["aiinfn"]["environment"] == "~/envs/mine"
    image = Environment("qml", "QML", "", "apptainer", "/envs/qml", image="image.sif", gpu=True)
    spec = kernelspecs.kernel_spec(image, "managed", ["/opt/bin/apptainer"])
    assert spec["argv"] == [
        "/opt/bin/apptainer", "exec", "--nv", "/envs/qml/image.sif",
        "python", "-m", "ipykernel_launcher", "-f", "{connection_file}",
    ]  # fmt: skip
    assert spec["env"] == {}


def test_requirements_must_be_pinned() -> None:
    text = (
        "# comment\n--index-url https://pypi.org/simple\nnumpy==2.1.0\ntorch[cuda] == 2.5.1\n"
        "pkg @ https://example.org/pkg.whl\nlocal-1.0-py3-none-any.whl\nscipy>=1\nrequests\n"
    )
    assert specs.unpinned_requirements(text) == ["scipy>=1", "requests"]
    conda = {"dependencies": ["python=3.12", "conda-forge::numpy==2.1", "scipy", {"pip": ["x"]}]}
    assert specs.unpinned_conda(conda) == ["scipy", "x"]


def test_spec_is_checked_against_its_folder(tmp_path: Path) -> None:
    (tmp_path / "req.txt").write_text("numpy==2.1.0\n")
    document = {"name": "np", "kind": "venv", "requirements": "req.txt", "layer_on_base": True}
    spec = specs.parse(document, tmp_path)
    assert (spec.name, spec.display_name, spec.requirements, spec.layer_on_base) == (
        "np", "np", tmp_path / "req.txt", True
    )  # fmt: skip
    with pytest.raises(LayoutError, match="unknown field"):
        specs.parse({**document, "extra": 1}, tmp_path)
    with pytest.raises(LayoutError, match="requirements: .* is not a file"):
        specs.parse({**document, "requirements": "missing.txt"}, tmp_path)
    (tmp_path / "loose.txt").write_text("numpy\n")
    with pytest.raises(LayoutError, match="not pinned"):
        specs.parse({**document, "requirements": "loose.txt"}, tmp_path)
    with pytest.raises(LayoutError, match="image: required"):
        specs.parse({"name": "q", "kind": "apptainer"}, tmp_path)


@pytest.mark.parametrize("name", ["ml-gpu", "qml"])
def test_the_papers_environments_are_publishable_specs(name: str) -> None:
    spec = specs.load(Path(__file__).parents[2] / "docs" / "environments" / name / "spec.yaml")
    assert spec.name == name
