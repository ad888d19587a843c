"""The backup target on the dev cluster: helm-values/storage.yaml's claim, rewritten to a local
folder like every other claim, with the `homes` and `projects` folders docs/backup.md has the
admin make (tests/backup_cluster.py and the demo use it). The backup service's shipped Role,
which the tests run the service with."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from aiinfn_dev import devstorage

from tests.backup_cluster import BACKUP_UID, SERVICE_RULES
from tests.helm_values import HELM_VALUES, objects


def test_the_backup_target_claim_becomes_a_local_folder(tmp_path: Path):
    documents = devstorage.for_namespace(devstorage.load(), "ns", tmp_path)
    folders = devstorage.claim_folders(documents)
    assert folders["aiinfn-backup"] == tmp_path / "csi/cephfs.csi.ceph.com/aiinfn-backup"
    [claim] = [
        d
        for d in documents
        if d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == "aiinfn-backup"
    ]
    assert claim["spec"]["volumeName"] == "aiinfn-backup.ns"


@pytest.mark.skipif(os.geteuid() != 0, reason="the projects folder is the backup uid's (chown)")
def test_the_backup_targets_folders_are_made_as_the_admin_makes_them(tmp_path: Path):
    documents = devstorage.for_namespace(devstorage.load(), "ns", tmp_path)
    devstorage.make_folders(documents)
    for _ in range(2):  # the folders outlive a dev cluster: made again, unchanged
        target = devstorage.make_backup_target_folders(documents)
    assert target is not None
    homes, projects = (target / "homes").stat(), (target / "projects").stat()
    assert (homes.st_mode & 0o7777, homes.st_uid) == (0o1733, 0)
    assert (projects.st_mode & 0o7777, projects.st_uid) == (0o711, BACKUP_UID)


def test_no_target_claim_no_folders(tmp_path: Path):
    assert devstorage.make_backup_target_folders([]) is None


def test_the_backup_services_role_is_namespaced_and_least_privilege():
    """The shipped Role, which the integration tests run the service with (SERVICE_RULES)."""
    [role, binding] = objects(HELM_VALUES / "backup-service-rbac.yaml")
    assert (
        role["rules"]
        == SERVICE_RULES
        == [
            {
                "apiGroups": ["batch"],
                "resources": ["jobs"],
                "verbs": ["create", "get", "list", "delete"],
            },
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
            {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create", "update"]},
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "update"]},
        ]
    )
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "hub", "namespace": "jhub"}]
