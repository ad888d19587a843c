"""Backup, check and restore Jobs, tested as literal manifests."""

import pytest

from aiinfn_hub.identity import Identity
from aiinfn_hub.services.backup import manifests, paths, repos
from aiinfn_hub.services.backup.manifests import BackupSettings
from aiinfn_hub.storage_config import StorageSettings

SETTINGS = BackupSettings(image="registry.example/aiinfn/backup:1.0")
STORAGE = StorageSettings()
ALICE = Identity(100001, {"cms-ml": 200001})
HOME = repos.home("alice")
PROJECT = repos.project("cms-ml")
ARCHIVE = "2026-12-05T020000Z"
COMMON = ["--lock-wait", "1", "--umask", "0077"]
PROJECT_COMMON = ["--lock-wait", "1", "--umask", "0027"]
ALICE_REPO = "/aiinfn/backup-target/homes/alice"
PROJECT_REPO = "/aiinfn/backup-target/projects/cms-2dml"


def _env(base_dir):
    return [
        {"name": "BORG_PASSCOMMAND", "value": "cat /aiinfn/backup-key/passphrase"},
        {"name": "BORG_BASE_DIR", "value": base_dir},
        {"name": "TZ", "value": "UTC"},
        {"name": "USER", "value": "aiinfn-backup"},
        {"name": "BORG_RELOCATED_REPO_ACCESS_IS_OK", "value": "no"},
        {"name": "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "value": "no"},
        {"name": "BORG_CHECK_I_KNOW_WHAT_I_AM_DOING", "value": "NO"},
        {"name": "BORG_DELETE_I_KNOW_WHAT_I_AM_DOING", "value": "NO"},
        {"name": "AIINFN_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "BORG_HOST_ID", "value": "aiinfn-backup-pod:$(AIINFN_POD_NAME)"},
    ]


RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESOURCES = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}}
TMP = ({"name": "tmp", "emptyDir": {}}, {"name": "tmp", "mountPath": "/tmp", "readOnly": False})


def _key(item):
    volume = {
        "name": "backup-key",
        "secret": {
            "secretName": "aiinfn-backup-keys",
            "items": [{"key": item, "path": "passphrase"}],
            "defaultMode": 0o444,
        },
    }
    return volume, {"name": "backup-key", "mountPath": "/aiinfn/backup-key", "readOnly": True}


def _container(name, command, env, mounts):
    return {
        "name": name,
        "image": "registry.example/aiinfn/backup:1.0",
        "command": command,
        "env": env,
        "resources": RESOURCES,
        "securityContext": RESTRICTED,
        "volumeMounts": mounts,
    }


def _job(name, metadata, security, containers, volumes):
    pod_spec = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": security,
        "containers": containers[-1:],
        "volumes": volumes,
    }
    if containers[:-1]:
        pod_spec["initContainers"] = containers[:-1]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, **metadata},
        "spec": {
            "parallelism": 1,
            "completions": 1,
            "backoffLimit": 0,
            "activeDeadlineSeconds": 21600,
            "ttlSecondsAfterFinished": 86400,
            "template": {"metadata": metadata, "spec": pod_spec},
        },
    }


HOME_METADATA = {
    "labels": {
        "app.kubernetes.io/managed-by": "aiinfn-hub",
        "app.kubernetes.io/part-of": "aiinfn-hub",
        "app.kubernetes.io/component": "backup",
        "aiinfn.infn.it/job-kind": "home",
        "aiinfn.infn.it/owner": "alice",
    },
    "annotations": {"aiinfn.infn.it/owner-name": "alice"},
}


def test_a_home_backup_reads_the_home_read_only_as_its_owner():
    job = manifests.make_backup_job(
        SETTINGS, STORAGE, HOME, manifests.home_backup_identity(ALICE), ARCHIVE, "r1"
    )
    source = (
        {"name": "source", "persistentVolumeClaim": {"claimName": "aiinfn-home", "readOnly": True}},
        {"name": "source", "mountPath": "/aiinfn/sources", "readOnly": True},
    )
    target = (
        {
            "name": "backup-target",
            "persistentVolumeClaim": {"claimName": "aiinfn-backup", "readOnly": False},
        },
        {
            "name": "backup-target",
            "mountPath": "/aiinfn/backup-target/homes",
            "readOnly": False,
            "subPath": "homes",
        },
    )
    pairs = [source, target, _key("home-alice"), TMP]
    mounts = [mount for _, mount in pairs]
    env = _env("/aiinfn/backup-target/homes/alice.state")
    init = ["borg", "init", *COMMON, "--encryption=repokey-blake2", "--", ALICE_REPO]
    create = ["borg", "create", *COMMON, "--json", "--compression", "zstd,3"]
    create += ["--one-file-system", "--numeric-ids", "--exclude-caches"]
    create += ["--exclude", "sh:**/.cache", "--exclude", "sh:**/__pycache__"]
    create += ["--", f"{ALICE_REPO}::{ARCHIVE}", "."]
    prune = ["borg", "prune", *COMMON, "--list"]
    prune += ["--keep-daily=7", "--keep-weekly=4", "--keep-monthly=6", "--", ALICE_REPO]
    compact = ["borg", "compact", *COMMON, "--", ALICE_REPO]
    info = ["borg", "info", *COMMON, "--json", "--", ALICE_REPO]
    archives = ["borg", "list", *COMMON, "--json", "--", ALICE_REPO]
    backup = ["sh", "-c", manifests.BACKUP_SCRIPT, "backup", "/aiinfn/sources/alice", ALICE_REPO]
    backup.append("0")  # no break-lock
    for command in (init, prune, compact, create, archives, info):
        backup += [str(len(command)), *command]
    containers = [_container("backup", backup, env, mounts)]
    security = {
        "runAsUser": 100001,
        "runAsGroup": 100001,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    volumes = [volume for volume, _ in pairs]
    expected = _job("backup-home-1c7ad76b44f8-r1", HOME_METADATA, security, containers, volumes)
    assert job == expected


def test_a_project_backup_runs_as_the_backup_uid_in_the_project_group():
    job = manifests.make_backup_job(
        SETTINGS,
        STORAGE,
        PROJECT,
        manifests.project_backup_identity(SETTINGS, 200001),
        ARCHIVE,
        "r1",
    )
    spec = job["spec"]["template"]["spec"]
    assert job["metadata"] == {
        "name": f"backup-project-{PROJECT.digest}-r1",
        "labels": {
            "app.kubernetes.io/managed-by": "aiinfn-hub",
            "app.kubernetes.io/part-of": "aiinfn-hub",
            "app.kubernetes.io/component": "backup",
            "aiinfn.infn.it/job-kind": "project",
            "aiinfn.infn.it/project": "cms-ml",
        },
        "annotations": {"aiinfn.infn.it/project": "cms-ml"},
    }
    assert spec["securityContext"] == {
        "runAsUser": 990,
        "runAsGroup": 200001,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
        "supplementalGroups": [200001],
        "supplementalGroupsPolicy": "Strict",
    }
    assert spec["volumes"][:3] == [
        {
            "name": "source",
            "persistentVolumeClaim": {"claimName": "aiinfn-project-cms-2dml", "readOnly": True},
        },
        {
            "name": "backup-target",
            "persistentVolumeClaim": {"claimName": "aiinfn-backup", "readOnly": False},
        },
        _key("project-cms-2dml")[0],
    ]
    backup = spec["containers"][0]
    assert "initContainers" not in spec
    assert backup["command"][:6] == [
        "sh", "-c", manifests.BACKUP_SCRIPT, "backup", "/aiinfn/sources/cms-2dml", PROJECT_REPO
    ]  # fmt: skip
    create = backup["command"].index("create")
    assert backup["command"][create - 1 : create + 1 + len(PROJECT_COMMON)] == [
        "borg", "create", *PROJECT_COMMON
    ]  # fmt: skip
    assert f"{PROJECT_REPO}::{ARCHIVE}" in backup["command"]
    assert backup["volumeMounts"][0] == {
        "name": "source", "mountPath": "/aiinfn/sources", "readOnly": True
    }  # fmt: skip
    assert "workingDir" not in backup
    assert backup["env"] == _env("/aiinfn/backup-target/projects/cms-2dml.state")


def test_a_backup_breaks_a_lock_only_when_told_before_prune_and_create():
    alice = manifests.home_backup_identity(ALICE)
    plain = manifests.make_backup_job(SETTINGS, STORAGE, HOME, alice, ARCHIVE, "r1")
    job = manifests.make_backup_job(SETTINGS, STORAGE, HOME, alice, ARCHIVE, "r1", break_lock=True)
    unlock = ["borg", "break-lock", *COMMON, "--", ALICE_REPO]
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[6 : 7 + len(unlock)] == [str(len(unlock)), *unlock]
    assert plain["spec"]["template"]["spec"]["containers"][0]["command"][6] == "0"


def test_a_lock_probe_reads_the_kind_folder_read_only_as_the_owner_without_a_key():
    job = manifests.make_lock_job(SETTINGS, HOME, manifests.home_backup_identity(ALICE), "l1")
    spec = job["spec"]["template"]["spec"]
    assert job["metadata"]["name"] == f"locks-home-{HOME.digest}-l1"
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "backup-lock"
    assert job["spec"]["activeDeadlineSeconds"] == manifests.LIST_DEADLINE_SECONDS
    assert spec["securityContext"]["runAsUser"] == 100001
    claim = {"claimName": "aiinfn-backup", "readOnly": True}
    assert spec["volumes"] == [
        {"name": "backup-target", "persistentVolumeClaim": claim},
        {"name": "tmp", "emptyDir": {}},
    ]
    container = spec["containers"][0]
    assert container["command"] == ["sh", "-c", manifests.LOCK_SCRIPT, "locks", ALICE_REPO]
    assert container["volumeMounts"][0] == {
        "name": "backup-target",
        "mountPath": "/aiinfn/backup-target/homes",
        "readOnly": True,
        "subPath": "homes",
    }


def test_a_check_job_checks_one_repository():
    job = manifests.make_check_job(
        SETTINGS, HOME, manifests.home_backup_identity(ALICE), "c1", verify_data=True
    )
    spec = job["spec"]["template"]["spec"]
    assert job["metadata"]["name"] == f"check-home-{HOME.digest}-c1"
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "backup-check"
    assert "initContainers" not in spec
    assert spec["containers"][0]["command"] == [
        "borg",
        "check",
        *COMMON,
        "--verify-data",
        "--",
        ALICE_REPO,
    ]
    assert [v["name"] for v in spec["volumes"]] == ["backup-target", "backup-key", "tmp"]


def test_a_restore_runs_as_the_user_with_only_their_repository_read_only():
    target = paths.user_target(ARCHIVE, "work/notebook.ipynb")
    job = manifests.make_restore_job(
        SETTINGS,
        HOME,
        "alice",
        manifests.restore_identity(ALICE),
        target,
        manifests.home_destination(STORAGE, "alice"),
        "x1",
    )
    folder = f"/home/jovyan/restored/{ARCHIVE}"
    extract = ["borg", "extract", *COMMON, "--bypass-lock", "--numeric-ids", "--"]
    extract += [f"{ALICE_REPO}::{ARCHIVE}", "work/notebook.ipynb"]
    command = ["sh", "-c", manifests.RESTORE_SCRIPT, "restore", folder, "work/notebook.ipynb"]
    pairs = [
        (
            {
                "name": "backup-target",
                "persistentVolumeClaim": {"claimName": "aiinfn-backup", "readOnly": True},
            },
            {
                "name": "backup-target",
                "mountPath": ALICE_REPO,
                "readOnly": True,
                "subPath": "homes/alice",
            },
        ),
        (
            {
                "name": "destination",
                "persistentVolumeClaim": {"claimName": "aiinfn-home", "readOnly": False},
            },
            {
                "name": "destination",
                "mountPath": "/home/jovyan",
                "readOnly": False,
                "subPath": "alice",
            },
        ),
        _key("home-alice"),
        (
            {"name": "borg-state", "emptyDir": {}},
            {"name": "borg-state", "mountPath": "/aiinfn/borg", "readOnly": False},
        ),
        TMP,
    ]
    container = _container(
        "restore", command + extract, _env("/aiinfn/borg"), [m for _, m in pairs]
    )
    metadata = {
        "labels": {**HOME_METADATA["labels"], "app.kubernetes.io/component": "restore"},
        "annotations": HOME_METADATA["annotations"],
    }
    security = {
        "runAsUser": 100001,
        "runAsGroup": 100001,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
        "supplementalGroups": [200001],
        "supplementalGroupsPolicy": "Strict",
    }
    name = "restore-home-1c7ad76b44f8-x1"
    assert job == _job(name, metadata, security, [container], [v for v, _ in pairs])


def test_an_admin_restores_a_project_archive_into_a_folder_of_the_project():
    target = paths.admin_target(ARCHIVE, "data", "recovered/ticket-42")
    job = manifests.make_restore_job(
        SETTINGS,
        PROJECT,
        "root-admin",
        manifests.RunAs(990, 200001, (200001,)),
        target,
        manifests.project_destination(STORAGE, "cms-ml"),
        "x2",
    )
    spec = job["spec"]["template"]["spec"]
    command = spec["containers"][0]["command"]
    assert command[3:6] == ["restore", "/home/shared/cms-ml/recovered/ticket-42", "data"]
    assert command[-2:] == [f"{PROJECT_REPO}::{ARCHIVE}", "data"]
    assert spec["volumes"][1] == {
        "name": "destination",
        "persistentVolumeClaim": {"claimName": "aiinfn-project-cms-2dml", "readOnly": False},
    }
    assert job["metadata"]["labels"]["aiinfn.infn.it/owner"] == "root-admin"
    assert job["metadata"]["annotations"] == {
        "aiinfn.infn.it/owner-name": "root-admin",
        "aiinfn.infn.it/project": "cms-ml",
    }


def test_no_pod_carries_the_passphrase_or_a_service_account_token():
    jobs = [
        manifests.make_backup_job(
            SETTINGS, STORAGE, HOME, manifests.home_backup_identity(ALICE), ARCHIVE, "r1"
        ),
        manifests.make_restore_job(
            SETTINGS,
            HOME,
            "alice",
            manifests.restore_identity(ALICE),
            paths.user_target(ARCHIVE, ""),
            manifests.home_destination(STORAGE, "alice"),
            "x1",
        ),
    ]
    for job in jobs:
        spec = job["spec"]["template"]["spec"]
        assert spec["automountServiceAccountToken"] is False
        for container in spec.get("initContainers", []) + spec["containers"]:
            names = {e["name"] for e in container["env"]}
            assert "BORG_PASSPHRASE" not in names
            assert not [e for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})]


@pytest.mark.parametrize("run_id", ["", "A1", "r-1", "r" * 21])
def test_run_ids_keep_job_names_short_and_valid(run_id):
    with pytest.raises(ValueError):
        manifests.job_name("backup", HOME, run_id)


def test_job_names_stay_under_63_characters_for_the_longest_names():
    longest = repos.project("p" * 120)
    assert len(manifests.job_name("restore", longest, "r" * 20)) <= 63
