"""uid/gid allocation: literal cases, a property test over random histories, a record that can
never make two owners share a number."""

from __future__ import annotations

import json
import os
import re

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from aiinfn_hub import identity
from aiinfn_hub.identity import Identity, IdentityError, Tables
from aiinfn_hub.storage_config import StorageSettings

SETTINGS = StorageSettings()
SMALL = StorageSettings(uid_min=1000, uid_max=1002, gid_min=2000, gid_max=2001)


def test_first_numbers_are_the_bottom_of_each_range():
    tables = identity.assign(Tables(), ["alice"], ["cms-ml", "envs-admins"], SETTINGS)
    assert tables == Tables({"alice": 100000}, {"cms-ml": 200000, "envs-admins": 200001})


def test_recorded_numbers_are_kept_and_new_ones_take_the_lowest_free():
    recorded = Tables({"alice": 100000, "bob": 100002}, {"qml": 200001})
    tables = identity.assign(
        recorded, ["carol", "alice", "dave"], ["cms-ml", "qml", "lhcb-flashsim"], SETTINGS
    )
    assert tables == Tables(
        {"alice": 100000, "bob": 100002, "carol": 100001, "dave": 100003},
        {"qml": 200001, "cms-ml": 200000, "lhcb-flashsim": 200002},
    )
    assert identity.assign(tables, ["carol"], ["qml"], SETTINGS) == tables


def test_a_user_and_a_project_of_the_same_name_never_share_a_number():
    tables = identity.assign(Tables(), ["qml"], ["qml"], SETTINGS)
    assert tables.users["qml"] != tables.groups["qml"]


def test_an_admin_pinned_number_is_never_handed_out_again():
    pinned = Tables({"legacy": 200000}, {})  # an old uid that falls inside the gid range
    tables = identity.assign(pinned, [], ["cms-ml"], SETTINGS)
    assert tables.groups == {"cms-ml": 200001}


def test_a_full_range_is_an_error_for_the_admins():
    tables = identity.assign(Tables(), ["a", "b", "c"], ["x", "y"], SMALL)
    with pytest.raises(IdentityError) as full:
        identity.assign(tables, ["d"], [], SMALL)
    assert full.value.status == 503
    assert "no free uid left in 1000..1002" in full.value.log_detail
    assert "admins" in full.value.message
    with pytest.raises(IdentityError) as full:
        identity.assign(tables, [], ["z"], SMALL)
    assert "no free gid left in 2000..2001" in full.value.log_detail


names_strategy = st.text(alphabet="abcAB._-0", min_size=1, max_size=6).filter(
    lambda n: n[0].isalnum() and ".." not in n
)


@hypothesis_settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.lists(names_strategy, max_size=4), st.lists(names_strategy, max_size=4)),
        max_size=8,
    )
)
def test_any_history_gives_injective_stable_numbers_in_their_ranges(history):
    tables = Tables()
    seen_users: dict[str, int] = {}
    seen_groups: dict[str, int] = {}
    for usernames, groups in history:
        tables = identity.assign(tables, usernames, groups, SETTINGS)
        for name, number in seen_users.items():
            assert tables.users[name] == number  # never changes once handed out
        for name, number in seen_groups.items():
            assert tables.groups[name] == number
        seen_users, seen_groups = dict(tables.users), dict(tables.groups)
        assert set(usernames) <= set(tables.users) and set(groups) <= set(tables.groups)
    numbers = [*tables.users.values(), *tables.groups.values()]
    assert len(numbers) == len(set(numbers))
    assert all(SETTINGS.uid_min <= n <= SETTINGS.uid_max for n in tables.users.values())
    assert all(SETTINGS.gid_min <= n <= SETTINGS.gid_max for n in tables.groups.values())
    assert identity.parse(identity.render(tables)) == tables


@pytest.mark.parametrize(
    "data, message",
    [
        ({"users": "{not json"}, "users is not JSON"),
        ({"users": "[1, 2]"}, "users is not a JSON object"),
        ({"users": json.dumps({"alice": 0})}, r"users\['alice'\] must be a number from 1000"),
        ({"users": json.dumps({"alice": True})}, "must be a number"),
        ({"users": json.dumps({"alice": "100000"})}, "must be a number"),
        ({"users": json.dumps({"a/b": 100000})}, "users has an invalid name"),
        ({"groups": json.dumps({"../x": 200000})}, "groups has an invalid name"),
        (
            {"users": json.dumps({"alice": 100000}), "groups": json.dumps({"qml": 100000})},
            "recorded for two names",
        ),
        ({"users": json.dumps({"alice": 100000, "Alice": 100000})}, "recorded for two names"),
    ],
)
def test_a_damaged_record_is_refused_rather_than_shared(data, message):
    with pytest.raises(IdentityError) as refused:
        identity.parse(data)
    assert re.search(message, refused.value.log_detail), refused.value.log_detail
    assert refused.value.status == 503


def test_record_as_a_configmap():
    tables = Tables({"bob": 100001, "alice": 100000}, {"qml": 200000})
    assert identity.make_configmap("aiinfn-identities", tables, "42") == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "aiinfn-identities",
            "labels": {
                "app.kubernetes.io/managed-by": "aiinfn-hub",
                "app.kubernetes.io/part-of": "aiinfn-hub",
                "app.kubernetes.io/component": "identity",
            },
            "annotations": {
                "aiinfn.infn.it/note": (
                    "uids and gids handed out by aiinfn-hub; never edit or reuse a number"
                )
            },
            "resourceVersion": "42",
        },
        "data": {"users": '{"alice":100000,"bob":100001}', "groups": '{"qml":200000}'},
    }
    assert "resourceVersion" not in identity.make_configmap("x", tables)["metadata"]
    assert identity.parse(None) == Tables()


def test_identity_gives_the_private_group_and_sorted_supplemental_gids():
    me = Identity(100003, {"qml": 200004, "cms-ml": 200001})
    assert (me.uid, me.gid, me.supplemental_gids) == (100003, 100003, [200001, 200004])


def test_the_record_is_rebuilt_from_who_owns_the_folders():
    users = {
        "-41lice": {100003},
        "bob": {100001},
        "a-2elice": {100000, 0},
        "lost+found": {0},
        "dave": {0},
    }
    projects = {"cms-2dml": {200001}, "lhcb-2fflashsim": {200000}, "Qml": {200002}}
    assert identity.from_folders(users, projects, SETTINGS) == Tables(
        {"Alice": 100003, "bob": 100001, "a.lice": 100000},  # root-owned folders name no one
        {"cms-ml": 200001, "lhcb/flashsim": 200000},
    )  # `Qml` is no slug of ours


@pytest.mark.parametrize(
    "users, projects, message",
    [
        ({"alice": {100000}, "bob": {100000}}, {}, "uid 100000 owns the folders of alice, bob"),
        (
            {"alice": {100000, 100001}},
            {},
            r"user 'alice' belong to several numbers \[100000, 100001\]",
        ),
        ({}, {"qml": {200000}, "cms-2dml": {200000}}, "gid 200000 owns the folders of cms-ml, qml"),
    ],
)
def test_storage_that_shows_no_single_owner_is_left_to_the_admins(users, projects, message):
    with pytest.raises(IdentityError) as refused:
        identity.from_folders(users, projects, SETTINGS)
    assert re.search(message, refused.value.log_detail), refused.value.log_detail


def test_the_admin_command_prints_the_record_from_the_exports(tmp_path, capsys):
    homes, juicefs, projects = tmp_path / "home", tmp_path / "juicefs", tmp_path / "projects"
    for folder in (homes / "alice", juicefs / "alice", homes / ".hidden", projects / "qml"):
        folder.mkdir(parents=True)
    (homes / "notes.txt").write_text("not a folder")
    (homes / "bob").symlink_to("alice")
    if os.geteuid() == 0:
        for folder in (homes / "alice", juicefs / "alice"):
            os.chown(folder, 100004, 100004)
        os.chown(projects / "qml", 0, 200007)
        assert identity.main([str(homes), str(juicefs), "--projects", str(projects)]) == 0
        record = json.loads(capsys.readouterr().out)
        assert record["metadata"]["name"] == "aiinfn-identities"
        assert record["data"] == {"users": '{"alice":100004}', "groups": '{"qml":200007}'}
        os.chown(juicefs / "alice", 100005, 100005)
        assert identity.main([str(homes), str(juicefs)]) == 1
        assert "belong to several numbers [100004, 100005]" in capsys.readouterr().err
    assert identity.scan([homes], "st_uid").keys() == {"alice"}
