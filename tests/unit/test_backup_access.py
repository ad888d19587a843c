"""Who may use which backup repository, where a restore goes, and the listing Jobs (pure)."""

import json
from datetime import UTC, datetime

import pytest

from aiinfn_hub.errors import UserError
from aiinfn_hub.identity import Identity
from aiinfn_hub.services.backup import access, listing, manifests, operations, repos
from aiinfn_hub.services.base import HubUser

PROJECTS = ("cms-ml", "qml")
ALICE = HubUser("alice", frozenset({"cms-ml", "staff"}), False)
ADMIN = HubUser("admin", frozenset(), True)
ARCHIVE = "2026-12-05T020000Z"
SETTINGS = manifests.BackupSettings(image="registry.example/aiinfn/backup:1.0")


def _refused(call, status):
    with pytest.raises(UserError) as refused:
        call()
    assert refused.value.status == status, refused.value.message
    return refused.value.message


def test_a_request_names_a_home_or_a_project_of_the_catalog():
    assert access.repository("home", "alice", PROJECTS) == repos.home("alice")
    assert access.repository("project", "/cms-ml", PROJECTS) == repos.project("cms-ml")
    assert "'other'" in _refused(lambda: access.repository("project", "other", PROJECTS), 404)
    _refused(lambda: access.repository("dataset", "alice", PROJECTS), 400)
    _refused(lambda: access.repository("home", "../bob", PROJECTS), 403)
    _refused(lambda: access.repository(None, "alice", PROJECTS), 400)


@pytest.mark.parametrize(
    ("caller", "repository", "allowed"),
    [
        (ALICE, repos.home("alice"), True),
        (ALICE, repos.home("alice2"), False),
        (ALICE, repos.home("bob"), False),
        (ALICE, repos.project("cms-ml"), True),
        (ALICE, repos.project("qml"), False),
        (ADMIN, repos.home("bob"), True),
        (ADMIN, repos.project("qml"), True),
    ],
)
def test_users_use_their_home_and_projects_admins_any(caller, repository, allowed):
    member_of = ["cms-ml"] if caller is ALICE else []
    if allowed:
        access.authorise(caller, repository, member_of)
    else:
        message = _refused(lambda: access.authorise(caller, repository, member_of), 403)
        assert repository.name not in message


def test_a_users_restore_goes_to_restored_in_their_own_home_as_themselves():
    plan = access.restore_plan(ALICE, repos.project("cms-ml"), ["cms-ml"], ARCHIVE, "data/")
    assert plan == access.RestorePlan(
        manifests.paths.RestoreTarget(ARCHIVE, "data", f"restored/{ARCHIVE}"), "own-home", True
    )
    message = _refused(
        lambda: access.restore_plan(ALICE, repos.home("alice"), [], ARCHIVE, "a", "elsewhere"), 403
    )
    assert "only admins" in message
    _refused(lambda: access.restore_plan(ALICE, repos.home("bob"), [], ARCHIVE, "a"), 403)
    _refused(lambda: access.restore_plan(ALICE, repos.home("alice"), [], ARCHIVE, "../a"), 400)
    _refused(lambda: access.restore_plan(ALICE, repos.home("alice"), [], "-x", "a"), 400)


def test_an_admin_restores_anyones_data_into_its_own_volume():
    bob = repos.home("bob")
    chosen = access.restore_plan(ADMIN, bob, [], ARCHIVE, "notes", "recovered/by-admin")
    assert chosen == access.RestorePlan(
        manifests.paths.RestoreTarget(ARCHIVE, "notes", "recovered/by-admin"),
        "repository-volume",
        False,
    )
    default = access.restore_plan(ADMIN, bob, [], ARCHIVE, "notes")
    assert default.target.folder == f"restored/{ARCHIVE}" and default.into == "repository-volume"
    own = access.restore_plan(ADMIN, repos.home("admin"), [], ARCHIVE, "notes")
    assert own.into == "own-home" and own.as_caller
    _refused(lambda: access.restore_plan(ADMIN, bob, [], ARCHIVE, "notes", "../alice"), 400)


def test_the_list_job_mounts_only_the_repository_read_only_and_runs_as_the_reader():
    run_as = manifests.restore_identity(Identity(100001, {"cms-ml": 200001}))
    job = manifests.make_list_job(
        SETTINGS, repos.home("alice"), "alice", run_as, "abc123", ARCHIVE, "work/my data"
    )
    spec = job["spec"]["template"]["spec"]
    assert job["metadata"]["name"] == f"list-home-{repos.home('alice').digest}-abc123"
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "backup-list"
    assert job["spec"]["ttlSecondsAfterFinished"] == 600
    assert spec["securityContext"]["runAsUser"] == 100001
    assert spec["securityContext"]["supplementalGroups"] == [200001]
    assert [v["name"] for v in spec["volumes"]] == [
        "backup-target",
        "backup-key",
        "borg-state",
        "tmp",
    ]
    assert spec["volumes"][0]["persistentVolumeClaim"] == {
        "claimName": "aiinfn-backup",
        "readOnly": True,
    }
    assert spec["volumes"][1]["secret"]["items"] == [{"key": "home-alice", "path": "passphrase"}]
    (container,) = spec["containers"]
    assert container["volumeMounts"][0] == {
        "name": "backup-target",
        "mountPath": "/aiinfn/backup-target/homes/alice",
        "readOnly": True,
        "subPath": "homes/alice",
    }
    assert container["command"] == [
        "sh", "-c", manifests.LIST_SCRIPT, "list",
        "borg", "list", "--lock-wait", "1", "--umask", "0077", "--bypass-lock", "--json-lines",
        r"--pattern=+re:^work/my\ data/[^/]+$", "--pattern=-re:.",
        "--", f"/aiinfn/backup-target/homes/alice::{ARCHIVE}", "work/my data",
    ]  # fmt: skip
    top = manifests.make_list_job(SETTINGS, repos.home("alice"), "alice", run_as, "abc124")
    assert top["spec"]["template"]["spec"]["containers"][0]["command"][4:] == [
        "borg", "info", "--lock-wait", "1", "--umask", "0077", "--bypass-lock", "--json",
        "--glob-archives", "*", "--", "/aiinfn/backup-target/homes/alice",
    ]  # fmt: skip


def test_listings_hide_checkpoints_and_keep_a_folders_direct_entries():
    document = {
        "archives": [
            {"name": "2026-12-03T020000Z", "time": "2026-12-03T02:00:01.000000"},
            {"name": "2026-12-04T020000Z.checkpoint", "time": "2026-12-04T02:00:01.000000"},
            {"name": "2026-12-05T020000Z", "time": "2026-12-05T02:00:01.000000"},
        ]
    }
    found = listing.archives(json.dumps(document))
    assert [a.name for a in found] == ["2026-12-05T020000Z", "2026-12-03T020000Z"]

    def info(name: str, day: int) -> dict:
        stats = {"nfiles": 3, "original_size": 3000 + day, "compressed_size": 2000,
                 "deduplicated_size": 10 * day}  # fmt: skip
        start, end = f"2026-12-0{day}T02:00:01.000000", f"2026-12-0{day}T02:00:09.000000"
        return {"name": name, "start": start, "end": end, "stats": stats, "id": "x"}

    document = {
        "archives": [
            info("2026-12-03T020000Z", 3),
            info("2026-12-04T020000Z.checkpoint.1", 4),
            info("2026-12-05T020000Z", 5),
        ],
        "cache": {},
        "repository": {},
    }
    sized = listing.archives_with_sizes(json.dumps(document))
    assert [a.name for a in sized] == ["2026-12-05T020000Z", "2026-12-03T020000Z"]
    assert operations.archive_document(sized[0]) == {
        "name": "2026-12-05T020000Z",
        "time": datetime(2026, 12, 5, 2, 0, 1, tzinfo=UTC).isoformat(),
        "files": 3,
        "original_size": 3005,
        "compressed_size": 2000,
        "deduplicated_size": 50,
    }

    def item(path, kind="-", target=""):
        return json.dumps(
            {"path": path, "type": kind, "mode": "-rw-r--r--", "size": 3, "linktarget": target,
             "mtime": "2026-12-05T01:00:00.000000"}
        )  # fmt: skip

    lines = [item("work", "d"), item("work/b"), item("work/a/x"), item("work/l", "l", "../b")]
    children = listing.children("\n".join(lines) + "\n", "work")
    assert [c.path for c in children] == ["work/b", "work/l"]
    assert operations.item_document(children[1])["link_target"] == "../b"
    assert operations.item_document(children[1])["type"] == "symlink"


def test_run_states_from_the_jobs_conditions_and_the_pods_exit_code():
    assert operations.job_state({"status": {}}) == "running"
    done = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    assert operations.job_state(done) == "succeeded"
    failed = {"status": {"conditions": [{"type": "Failed", "status": "True"}]}}
    assert operations.job_state(failed) == "failed"
    pod = {"status": {"containerStatuses": [{"state": {"terminated": {"exitCode": 3}}}]}}
    assert operations.exit_code(pod) == 3 and operations.exit_code(None) is None
    assert operations.RUN_NAME.fullmatch(f"restore-home-{'a' * 12}-x1")
    assert not operations.RUN_NAME.fullmatch(f"list-home-{'a' * 12}-x1")
