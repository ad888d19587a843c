"""Which repository holds whose data: one per home, one per project, names never shared."""

import pytest

from aiinfn_hub.names import InvalidName
from aiinfn_hub.services.backup import repos


def test_a_home_and_a_project_each_have_their_own_repository():
    alice = repos.home("alice")
    assert (alice.kind, alice.name, alice.relative_path, alice.key) == (
        "home",
        "alice",
        "homes/alice",
        "home-alice",
    )
    project = repos.project("/cms-ml")
    assert (project.name, project.relative_path, project.key) == (
        "cms-ml",
        "projects/cms-2dml",
        "project-cms-2dml",
    )
    assert repos.path_under("/aiinfn/backup-target/", alice) == "/aiinfn/backup-target/homes/alice"


def test_names_that_differ_never_share_a_repository():
    found = [repos.home(name) for name in ("alice", "Alice", "a.lice", "a_lice", "alice2")]
    found += [repos.project(name) for name in ("alice", "cms/ml", "cms-ml")]
    assert len({r.relative_path for r in found}) == len({r.key for r in found}) == len(found)
    assert len({r.digest for r in found}) == len(found)


@pytest.mark.parametrize("name", ["../bob", "alice/..", "", "-alice", "al ice", "аlice", 7])
def test_invalid_names_are_refused_before_any_path_is_made(name):
    with pytest.raises(InvalidName):
        repos.home(name)


def test_project_parts_are_checked():
    with pytest.raises(InvalidName):
        repos.project("cms/../atlas")


def test_the_target_must_be_an_absolute_path():
    with pytest.raises(ValueError):
        repos.path_under("backup", repos.home("alice"))
