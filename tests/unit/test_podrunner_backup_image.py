"""The dev cluster's pod runner plays the backup image with this machine's Debian borg."""

from __future__ import annotations

from pathlib import Path

from aiinfn_dev.devcluster import podrunner
from aiinfn_dev.devcluster.podplan import LocalImage

from aiinfn_hub import catalog
from aiinfn_hub.services.backup import image

DEBIAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def test_the_backup_image_is_played_by_the_system_as_its_dockerfile_says(tmp_path):
    env = tmp_path / "nbenv"
    env.mkdir()
    (env / "pyvenv.cfg").write_text("home = /opt/python/bin\n")
    settings = podrunner.settings_for(
        Path("/k"), Path("/state"), env, catalog.default_path(), Path("/src"), Path("/c"),
        backup=True,
    )  # fmt: skip
    played = settings.images[image.IMAGE]
    assert played == LocalImage(
        prefix="",
        cmd=("bash",),
        user="nobody",
        uid=65534,
        gid=65534,
        group="nogroup",
        home="/nonexistent",
        base="debian",
        workdir="/",
    )
    # Debian's image sets PATH only; borg and sh are the system's, under /usr and /bin.
    assert played.env() == {"PATH": DEBIAN_PATH, "HOME": "/nonexistent"}
    assert {"/usr", "/bin", "/etc"} <= set(settings.host_paths)
    assert podrunner.Settings.from_json(settings.to_json()) == settings
    without = podrunner.settings_for(
        Path("/k"), Path("/state"), env, catalog.default_path(), Path("/src"), Path("/c")
    )
    assert image.IMAGE not in without.images


def test_the_backup_image_needs_debians_borg(tmp_path):
    assert "no " in (podrunner.backup_image_problem(tmp_path / "borg") or "")
    (tmp_path / "borg").touch()
    assert podrunner.backup_image_problem(tmp_path / "borg") is None
