"""The container images agree with each other, with their pinned requirements and with the catalog.

No image can be built here (no container engine), so these checks read the files: images/README.md
says how the images are built and what the dev cluster does differently.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from aiinfn_hub import catalog
from aiinfn_hub.services.backup import image as backup_image

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
FOLDERS = sorted(p.parent.name for p in IMAGES.glob("*/Dockerfile"))
# The chart version this product supports and what its hub image has (z2jh 4.4.0,
# images/hub/requirements.txt at the tag), for the packages the product is built against.
CHART_HUB_IMAGE = "quay.io/jupyterhub/k8s-hub:4.4.0"
CHART_HUB_IMAGE_PINS = {
    "jupyterhub": "5.5.0",
    "jupyterhub-kubespawner": "7.0.0",
    "oauthenticator": "17.4.0",
}
# Where the hub image is newer than the chart's, and why.
NEWER_THAN_CHART = {"jupyterhub-kubespawner": "7.1.0"}  # the product needs KubeSpawner >= 7.1
# Images that are bases of the catalog's, not environments of their own.
BASES = {"hub", "notebook"}
# Images of the platform's services made of Debian packages alone (no pip, no requirements).
DEBIAN_IMAGES = {"backup"}
PIP_FOLDERS = [folder for folder in FOLDERS if folder not in DEBIAN_IMAGES]
VERSION_LABEL = re.compile(r'org\.opencontainers\.image\.version="([^"]+)"')
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)$")
# A pin only one Python needs (the dev cluster's notebook environment may run another one).
PIN_FOR_PYTHON = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!-]+"
    r' ; python_version == "3\.[0-9]+"$'
)
OWN_BASE = re.compile(r"^\$\{REGISTRY\}/([a-z0-9-]+):(\S+)$")
# An image reference pinned by tag, a digest optional: registry/name:tag[@sha256:...].
PINNED_REFERENCE = re.compile(
    r"^[a-z0-9][a-z0-9._/-]*(:[0-9]+/[a-z0-9._/-]+)?"
    r":(?!latest$)[A-Za-z0-9._-]+(@sha256:[a-f0-9]{64})?$"
)


def instructions(folder: str) -> list[tuple[str, str]]:
    """A Dockerfile's (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = (IMAGES / folder / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
        for line in joined.splitlines()
        if line.strip()
    ]


def args_of(folder: str, instruction: str) -> list[str]:
    return [arguments for name, arguments in instructions(folder) if name == instruction]


def version(folder: str) -> str:
    labels = [m[1] for label in args_of(folder, "LABEL") for m in VERSION_LABEL.finditer(label)]
    assert len(labels) == 1, f"images/{folder}/Dockerfile: one image.version label"
    return labels[0]


def registry_default(folder: str) -> str | None:
    defaults = [a.split("=", 1)[1] for a in args_of(folder, "ARG") if a.startswith("REGISTRY=")]
    return defaults[0] if defaults else None


def stages(folder: str) -> list[tuple[str, str | None]]:
    """(image, stage name) of each FROM."""
    found = []
    for arguments in args_of(folder, "FROM"):
        words = [w for w in arguments.split() if not w.startswith("--platform")]
        found.append((words[0], words[2] if len(words) == 3 and words[1].upper() == "AS" else None))
    return found


def own_base(folder: str) -> str | None:
    """The image folder this image's final stage builds on, if it is one of ours."""
    match = OWN_BASE.match(stages(folder)[-1][0])
    return match[1] if match else None


def chain(folder: str) -> list[str]:
    """The folder and the folders it builds on, nearest first."""
    base = own_base(folder)
    return [folder] + (chain(base) if base else [])


def requirement_lines(path: Path) -> list[str]:
    return [
        line.strip()
        for line in path.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(folder: str) -> dict[str, str]:
    lines = requirement_lines(IMAGES / folder / "requirements.txt")
    return {canonical(m[1]): m[2] for m in map(PIN.match, lines) if m}


def environment(folder: str) -> dict[str, str]:
    """Every pinned package of an image: its own and its bases'."""
    return {name: pin for f in reversed(chain(folder)) for name, pin in pins(f).items()}


def product_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"]]


def test_the_images_are_the_catalogs_environments_and_their_bases():
    assert {"hub", "notebook", "cpu", "ml-gpu", "qml-gpu"} <= set(FOLDERS)
    environments = catalog.load(catalog.default_path()).environments
    named = {env.image.rsplit("/", 1)[1].split(":")[0] for env in environments.values()}
    assert named == set(FOLDERS) - BASES - DEBIAN_IMAGES


@pytest.mark.parametrize("key", list(catalog.load(catalog.default_path()).environments))
def test_each_catalog_environment_names_its_image_folder_and_version(key):
    image = catalog.load(catalog.default_path()).environments[key].image
    registry, reference = image.rsplit("/", 1)
    folder, tag = reference.split(":")
    assert folder in FOLDERS, f"environment {key}: no images/{folder}/Dockerfile for {image}"
    assert tag == version(folder), f"environment {key}: {image}, images/{folder}: {version(folder)}"
    assert registry == registry_default(folder), f"images/{folder}: ARG REGISTRY={registry}"


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_base_image_is_pinned_by_tag(folder):
    names = set()
    for image, name in stages(folder):
        if image in names:  # an earlier stage of the same file
            continue
        own = OWN_BASE.match(image)
        if own:
            assert (IMAGES / own[1] / "Dockerfile").exists(), f"images/{folder}: FROM {image}"
            assert own[2] == version(own[1]), f"images/{folder}: FROM {image}: not the base's tag"
        else:
            assert PINNED_REFERENCE.match(image), f"images/{folder}: FROM {image}: no pinned tag"
        names.add(name)


@pytest.mark.parametrize("folder", PIP_FOLDERS)
def test_every_requirement_is_pinned_once_in_the_chain(folder):
    lines = requirement_lines(IMAGES / folder / "requirements.txt")
    assert lines, f"images/{folder}/requirements.txt is empty"
    unpinned = [line for line in lines if not (PIN.match(line) or PIN_FOR_PYTHON.match(line))]
    assert not unpinned, f"images/{folder}: not pinned with ==: {unpinned}"
    below = {name for base in chain(folder)[1:] for name in pins(base)}
    assert not set(pins(folder)) & below, f"images/{folder} pins again what its base image has"
    # requirements.in says what the image is for; requirements.txt has it and what it needs.
    chosen = [Requirement(line) for line in requirement_lines(IMAGES / folder / "requirements.in")]
    have = environment(folder)
    for requirement in chosen:
        assert canonical(requirement.name) in have, f"images/{folder}: {requirement.name} unpinned"
        assert requirement.specifier.contains(have[canonical(requirement.name)], prereleases=True)


@pytest.mark.parametrize("folder", PIP_FOLDERS)
def test_each_image_installs_its_pins_alone_and_checks_them(folder):
    runs = " ".join(args_of(folder, "RUN"))
    assert re.search(r"pip install [^&]*--no-deps[^&]*-r /tmp/aiinfn/requirements\.txt", runs)
    assert "pip check" in runs
    copies = args_of(folder, "COPY")
    assert any(c.split()[-1] == "/tmp/aiinfn/requirements.txt" for c in copies)


def copy_sources(folder: str) -> list[str]:
    """What a Dockerfile copies from its build context (not from another stage)."""
    return [
        word
        for arguments in args_of(folder, "COPY")
        if "--from=" not in arguments
        for word in arguments.split()[:-1]
        if not word.startswith("--")
    ]


@pytest.mark.parametrize("folder", FOLDERS)
def test_what_a_dockerfile_copies_is_in_its_build_context(folder):
    ignore = IMAGES / folder / "Dockerfile.dockerignore"
    # With Dockerfile.dockerignore the build context is the repository root, else the folder.
    context = REPO if ignore.exists() else IMAGES / folder
    allowed = (
        {line[1:].rstrip("/") for line in ignore.read_text().splitlines() if line.startswith("!")}
        if ignore.exists()
        else None
    )
    for source in copy_sources(folder):
        assert (context / source).exists(), f"images/{folder}: COPY {source}: not in the context"
        if allowed is not None:
            assert source.rstrip("/") in allowed, f"images/{folder}: .dockerignore omits {source}"


@pytest.mark.parametrize("folder", ["hub", "notebook"])
def test_images_with_the_product_pin_all_it_needs(folder):
    have = pins(folder)
    for requirement in product_requirements():
        name = canonical(requirement.name)
        assert name in have, f"images/{folder}: the product needs {requirement}, not pinned"
        assert requirement.specifier.contains(have[name]), f"images/{folder}: {name}=={have[name]}"
    assert "aiinfn-hub-dev" not in have and "aiinfn-hub" not in have


def test_the_hub_image_is_the_charts_with_the_product_and_its_configuration():
    assert {image for image, _ in stages("hub")} == {CHART_HUB_IMAGE}
    config = "jupyterhub_config.d/ /usr/local/etc/jupyterhub/jupyterhub_config.d/"
    assert config in args_of("hub", "COPY")
    assert not any("devplatform" in c for c in args_of("hub", "COPY"))
    have = pins("hub")
    for name, chart_pin in CHART_HUB_IMAGE_PINS.items():
        assert have[name] == NEWER_THAN_CHART.get(name, chart_pin), f"{name}=={have[name]}"


def test_the_hub_image_is_tagged_with_the_product_version_the_chart_values_name():
    product = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    image = yaml.safe_load((REPO / "helm-values" / "values.yaml").read_text())["hub"]["image"]
    assert version("hub") == product == image["tag"]
    assert image["name"].rsplit("/", 1)[1] == "hub"


def test_notebooks_run_the_hubs_major_version_of_jupyterhub():
    assert pins("notebook")["jupyterhub"].split(".")[0] == pins("hub")["jupyterhub"].split(".")[0]


def test_the_notebook_base_carries_the_platforms_jupyter_settings():
    assert "images/notebook/jupyter/ /usr/local/etc/jupyter/" in args_of("notebook", "COPY")
    assert (IMAGES / "notebook" / "jupyter" / "labconfig" / "page_config.json").exists()
    assert args_of("notebook", "CMD") == ['["jupyterhub-singleuser"]']
    # The docker-stacks user the spawner's security context and the dev cluster's pod runner expect.
    assert args_of("notebook", "USER")[-1] == "1000:100"


def test_the_backup_image_is_debians_borg_12_tagged_as_the_product_names_it():
    assert [base for base, _ in stages("backup")] == ["debian:12.11-slim"]
    runs = " ".join(args_of("backup", "RUN"))
    assert re.search(r"apt-get install -y --no-install-recommends borgbackup=1\.2\.[0-9]+-", runs)
    product = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert backup_image.IMAGE == f"ghcr.io/aiinfn-hub/backup:{product}"
    assert version("backup") == product
    assert args_of("backup", "USER") == [f"{backup_image.UID}:{backup_image.GID}"]
