"""Restore paths: archive names, paths inside an archive, destinations, never overwriting."""

import pytest

from aiinfn_hub.errors import UserError
from aiinfn_hub.services.backup import paths
from aiinfn_hub.services.backup.paths import RestoreRefused, RestoreTarget


@pytest.mark.parametrize(
    "name", ["2026-12-05T020000Z", "2026-12-05T020000Z.checkpoint", "nightly_1+x"]
)
def test_archive_names_we_make_are_accepted(name):
    assert paths.archive_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "-a", "a/b", "a::b", "a b", "a\x00", "é", "a" * 129, None, 3, ".hidden"],
)
def test_other_archive_names_are_refused(name):
    with pytest.raises(RestoreRefused) as refused:
        paths.archive_name(name)
    assert refused.value.status == 400


@pytest.mark.parametrize(
    ("raw", "clean"),
    [("", ""), ("notebook.ipynb", "notebook.ipynb"), ("sub/deep/", "sub/deep"), ("-rf", "-rf")],
)
def test_relative_paths_are_accepted(raw, clean):
    assert paths.relative_path(raw) == clean


@pytest.mark.parametrize(
    "raw",
    [
        "/etc/passwd",
        "../bob",
        "sub/../../bob",
        "sub/..",
        "./sub",
        "sub//x",
        "a\x00b",
        "a\nb",
        "a\x7fb",
        "x" * 4097,
        "a/" + "b" * 256,
        None,
        ["a"],
    ],
)
def test_paths_that_could_leave_their_folder_are_refused(raw):
    with pytest.raises(RestoreRefused):
        paths.relative_path(raw)


def test_a_refusal_is_a_user_error_whose_message_names_no_other_data():
    with pytest.raises(UserError) as refused:
        paths.relative_path("../bob/secret")
    assert "bob" not in refused.value.message
    assert refused.value.reason == "invalid-restore"


@pytest.mark.parametrize(
    ("path", "prefix", "inside"),
    [
        ("/home/alice", "/home/alice", True),
        ("/home/alice/x", "/home/alice", True),
        ("/home/alice/x", "/home/alice/", True),
        ("/home/alice2", "/home/alice", False),
        ("/home/alice-old/x", "/home/alice", False),
        ("/home", "/home/alice", False),
        ("data2/x", "data", False),
        ("data/x", "data", True),
        ("anything", "", True),
        ("/abs", "", False),
        ("/abs", "/", True),
    ],
)
def test_prefix_checks_compare_whole_parts(path, prefix, inside):
    assert paths.is_within(path, prefix) is inside


def test_children_lists_one_level_of_an_archive():
    listing = [".", "a", "data", "data/x", "data/y/z", "data2", "data2/x"]
    assert paths.children(listing, "") == ["a", "data", "data2"]
    assert paths.children(listing, "data") == ["data/x"]
    assert paths.children(listing, "data/y") == ["data/y/z"]


def test_a_user_restores_into_restored_archive_in_their_home():
    target = paths.user_target("2026-12-05T020000Z", "work/notebook.ipynb")
    assert target == RestoreTarget(
        "2026-12-05T020000Z", "work/notebook.ipynb", "restored/2026-12-05T020000Z"
    )
    assert target.destination == "restored/2026-12-05T020000Z/work/notebook.ipynb"
    assert paths.user_target("a1", "").destination == "restored/a1"


def test_a_user_cannot_pick_the_destination_by_the_archive_or_the_path():
    for archive, path in [("../x", "a"), ("a", "../../.ssh/authorized_keys"), ("a", "/etc")]:
        with pytest.raises(RestoreRefused):
            paths.user_target(archive, path)


def test_an_admin_picks_a_folder_inside_the_mounted_volume():
    target = paths.admin_target("a1", "notes", "recovered/ticket-42")
    assert target.destination == "recovered/ticket-42/notes"
    for folder in ["", "/", "../bob", "/home/bob"]:
        with pytest.raises(RestoreRefused):
            paths.admin_target("a1", "notes", folder)


def test_absolute_destinations_must_be_under_an_allowed_root_by_whole_parts():
    roots = ("/home/alice", "/home/shared/cms-ml")
    assert paths.absolute_in(roots, "/home/alice/restored/x") == ("/home/alice", "restored/x")
    assert paths.absolute_in(roots, "/home/alice") == ("/home/alice", "")
    for path in ["/home/alice2/x", "/home/shared/cms-ml-old", "/home/alice/../bob", "rel", "/"]:
        with pytest.raises(RestoreRefused):
            paths.absolute_in(roots, path)


def test_an_existing_destination_is_never_overwritten():
    target = paths.user_target("a1", "notebook.ipynb")
    paths.refuse_existing(target, exists=False)
    with pytest.raises(RestoreRefused) as refused:
        paths.refuse_existing(target, exists=True)
    assert refused.value.status == 409
    assert refused.value.reason == "destination-exists"
    assert refused.value.message.startswith(
        "restored/a1/notebook.ipynb already exists; nothing was restored"
    )
