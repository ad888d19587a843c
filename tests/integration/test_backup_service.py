"""The backup service's operations (aiinfn_hub/services/backup/operations.py) on the dev cluster,
with the service's own account (a namespaced Role: Jobs, pods, logs, the keys Secret, the uid
record), never the admin's: a user backs up their home, lists their archives and a folder of
one through listing Jobs run as themselves, restores a file into ~/restored/<archive>/ and is
refused (409, nothing written) when it is there already; every refusal is a 4xx with no Job,
no passphrase and no uid created."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
import pytest_asyncio
from aiinfn_dev import devstorage

from aiinfn_hub import catalog, k8s, labels, names
from aiinfn_hub.errors import UserError
from aiinfn_hub.identity import IdentityStore
from aiinfn_hub.services.backup import paths, repos
from aiinfn_hub.services.backup.operations import BackupConfig, BackupService
from aiinfn_hub.services.backup.store import BackupStore
from aiinfn_hub.services.base import HubUser
from tests import backup_cluster
from tests.backup_cluster import BackupWorld, tree
from tests.helpers import wait_until

pytestmark = pytest.mark.integration

ALICE = HubUser("alice", frozenset({"cms-ml"}), False)
BOB = HubUser("bob", frozenset(), False)
ADMIN = HubUser("root-admin", frozenset(), True)
RUN_LIMIT = backup_cluster.JOB_LIMIT


@pytest_asyncio.fixture(loop_scope="session")
async def world(devcluster, namespace, storage):
    return backup_cluster.world_in(devcluster, namespace, devstorage.claim_folders(storage))


@pytest_asyncio.fixture(loop_scope="session")
async def service(devcluster, api_client, namespace, world: BackupWorld, tmp_path):
    kubeconfig, _ = devcluster
    path = await backup_cluster.service_kubeconfig(
        api_client, namespace, kubeconfig, tmp_path / "backup-service.kubeconfig"
    )
    async with await k8s.api_client(str(path)) as service_client:
        store = BackupStore(service_client, namespace)
        await wait_until(lambda: _granted(store), "RBAC to grant the backup service's Role")
        config = BackupConfig(world.settings, world.storage, catalog.load(catalog.default_path()))
        yield BackupService(store, config, IdentityStore(service_client, namespace))


async def _granted(store: BackupStore) -> bool:
    try:
        await store.list_jobs("a=b")
    except Exception:
        return False
    return True


async def _finished(service: BackupService, caller: HubUser, run_id: str) -> dict | None:
    status = await service.status(caller, run_id)
    return status if status["state"] != "running" else None


async def _wait(service: BackupService, caller: HubUser, run_id: str) -> dict:
    return await wait_until(
        lambda: _finished(service, caller, run_id), f"run {run_id}", limit=RUN_LIMIT
    )


async def _jobs(batch, namespace: str) -> list[str]:
    return sorted(j.metadata.name for j in (await batch.list_namespaced_job(namespace)).items)


async def _identity_record(core, namespace: str) -> dict:
    maps = await core.list_namespaced_config_map(namespace)
    return {m.metadata.name: dict(m.data or {}) for m in maps.items}


async def _keys(core, namespace: str, name: str) -> dict:
    secrets = await core.list_namespaced_secret(namespace)
    return {s.metadata.name: dict(s.data or {}) for s in secrets.items if s.metadata.name == name}


async def _alice_home(world: BackupWorld, api_client, namespace: str, tmp_path: Path) -> Path:
    """alice's uid and project gids as the spawner records them, and her home with files."""
    identity = await IdentityStore(api_client, namespace).identity("alice", sorted(ALICE.groups))
    uid = identity.uid
    outside = tmp_path / "other-project"
    outside.mkdir()
    (outside / "secret.txt").write_text("not alice's\n")
    return backup_cluster.make_home(world, "alice", uid, outside)


async def test_a_user_backs_up_lists_browses_and_restores_their_home(
    service: BackupService, world: BackupWorld, api_client, batch, core, namespace, tmp_path
):
    home = await _alice_home(world, api_client, namespace, tmp_path)
    assert await service.archives(ALICE, "home", "alice") == []  # no repository yet: no Job
    assert await _jobs(batch, namespace) == []

    started = await service.start_backup(ALICE, "home", "alice")
    assert (await _wait(service, ALICE, started["id"]))["state"] == "succeeded"
    keys = await _keys(core, namespace, world.settings.keys_secret)
    assert list(keys[world.settings.keys_secret]) == ["home-alice"]
    passphrase = base64.b64decode(keys[world.settings.keys_secret]["home-alice"]).decode()

    archives = await service.archives(ALICE, "home", "alice")
    assert [a["name"] for a in archives] == [started["archive"]]
    # Its sizes, from the listing Job's one `borg info` (five regular files, .cache excluded).
    assert archives[0]["files"] == 5 and archives[0]["original_size"] > 200_000, archives
    # Random data does not compress; the first archive holds everything alone.
    assert min(archives[0]["compressed_size"], archives[0]["deduplicated_size"]) > 200_000
    top = {
        item["path"]: item
        for item in await service.paths(ALICE, "home", "alice", archives[0]["name"])
    }
    assert set(top) == {"notebook.ipynb", "run.sh", "private.txt", "-rf", "work", "outside-dir",
                        "dangling"}  # fmt: skip
    assert top["work"]["type"] == "folder" and top["outside-dir"]["type"] == "symlink"
    assert top["dangling"]["link_target"] == "/nonexistent/target"
    assert top["private.txt"]["mode"] == "-rw-------"
    work = await service.paths(ALICE, "home", "alice", started["archive"], "work/")
    assert [(i["path"], i["type"]) for i in work] == [
        ("work/data.bin", "file"),
        ("work/deep", "folder"),
    ]
    assert work[0]["size"] == 200_000

    os.remove(home / "notebook.ipynb")  # the demo's lost notebook
    restore = await service.start_restore(ALICE, "home", "alice", started["archive"], "work")
    assert restore["destination"] == f"/home/jovyan/restored/{started['archive']}/work"
    assert (await _wait(service, ALICE, restore["id"]))["state"] == "succeeded"
    restored = home / paths.RESTORED_FOLDER / started["archive"]
    assert tree(restored / "work") == tree(home / "work")
    one = await service.start_restore(ALICE, "home", "alice", started["archive"], "notebook.ipynb")
    assert (await _wait(service, ALICE, one["id"]))["state"] == "succeeded"
    assert (restored / "notebook.ipynb").read_text() == '{"cells": [], "metadata": {}}\n'

    # Again: the destination exists; the restore Job refuses before borg runs.
    before = tree(home)
    again = await service.start_restore(ALICE, "home", "alice", started["archive"], "work")
    refused = await _wait(service, ALICE, again["id"])
    assert refused["state"] == "refused" and refused["status"] == 409
    assert "already exists; nothing was restored" in refused["message"]
    assert tree(home) == before
    # Nobody else sees alice's runs; the admin does.
    for run in (started["id"], restore["id"]):
        with pytest.raises(UserError) as seen:
            await service.status(BOB, run)
        assert seen.value.status == 404
        assert (await service.status(ADMIN, run))["state"] == "succeeded"
    # A second backup: the home barely changed (the restored copies are duplicates), so the
    # new archive holds almost nothing only of its own; the admin lists both (the Job runs as
    # alice, the repository's owner), newest first.
    second = await service.start_backup(ALICE, "home", "alice")
    assert (await _wait(service, ALICE, second["id"]))["state"] == "succeeded"
    newest, first = await service.archives(ADMIN, "home", "alice")
    assert (newest["name"], first["name"]) == (second["archive"], started["archive"])
    assert newest["original_size"] > first["original_size"]  # the restored copies
    assert newest["deduplicated_size"] < newest["original_size"] / 10, newest
    # The listing Jobs are gone; no pod spec or log holds the passphrase.
    for job in (await batch.list_namespaced_job(namespace)).items:
        assert not job.metadata.name.startswith("list-")
        assert passphrase not in str(job.to_dict())
    for pod in (await core.list_namespaced_pod(namespace)).items:
        assert passphrase not in str(pod.to_dict())
        for container in pod.spec.containers:
            text = await core.read_namespaced_pod_log(
                pod.metadata.name, namespace, container=container.name
            )
            assert passphrase not in text


async def test_every_refusal_is_a_4xx_that_creates_nothing(
    service: BackupService, world: BackupWorld, api_client, batch, core, namespace, tmp_path
):
    await _alice_home(world, api_client, namespace, tmp_path)
    started = await service.start_backup(ALICE, "home", "alice")
    with pytest.raises(UserError) as running:
        await service.start_backup(ALICE, "home", "alice")
    assert running.value.status == 409 and "already running" in running.value.message
    assert (await _wait(service, ALICE, started["id"]))["state"] == "succeeded"
    archive = started["archive"]
    secret = world.settings.keys_secret
    before = (
        await _jobs(batch, namespace),
        await _identity_record(core, namespace),
        await _keys(core, namespace, secret),
    )
    cases = [
        (lambda: service.archives(ALICE, "home", "bob"), 403),
        (lambda: service.paths(ALICE, "home", "bob", archive), 403),
        (lambda: service.start_restore(ALICE, "home", "bob", archive, ""), 403),
        (lambda: service.start_backup(ALICE, "home", "bob"), 403),
        (lambda: service.archives(ALICE, "project", "qml"), 403),
        (lambda: service.start_restore(ALICE, "project", "qml", archive, ""), 403),
        (lambda: service.start_backup(ALICE, "project", "/qml"), 403),
        (lambda: service.archives(ALICE, "project", "no-such-project"), 404),
        (lambda: service.archives(ALICE, "dataset", "alice"), 400),
        (lambda: service.archives(ALICE, "home", "../bob"), 403),
        (lambda: service.paths(ALICE, "home", "alice", archive, "../.."), 400),
        (lambda: service.start_restore(ALICE, "home", "alice", archive, "../etc"), 400),
        (lambda: service.start_restore(ALICE, "home", "alice", archive, "/etc/passwd"), 400),
        (lambda: service.start_restore(ALICE, "home", "alice", "--help", ""), 400),
        (lambda: service.start_restore(ALICE, "home", "alice", f"{archive}::x", ""), 400),
        (lambda: service.start_restore(ALICE, "home", "alice", archive, "", "../bob"), 403),
        (lambda: service.start_restore(ALICE, "home", "alice", "2020-01-01T000000Z", ""), 404),
        (lambda: service.paths(ALICE, "home", "alice", "2020-01-01T000000Z"), 404),
        (lambda: service.start_restore(BOB, "home", "bob", archive, ""), 404),
        (lambda: service.status(ALICE, "restore-home-000000000000-x"), 404),
        (lambda: service.status(ALICE, "list-home-000000000000-x"), 404),
    ]
    for call, status in cases:
        with pytest.raises(UserError) as refused:
            await call()
        assert refused.value.status == status, refused.value.message
        assert "bob" not in refused.value.message or status != 403
    after = (
        await _jobs(batch, namespace),
        await _identity_record(core, namespace),
        await _keys(core, namespace, secret),
    )
    assert after == before
    # The listing Jobs that the 404s ran (as alice) are gone, and so is every Job label.
    jobs = (await batch.list_namespaced_job(namespace)).items
    assert {j.metadata.labels[labels.COMPONENT] for j in jobs} == {"backup"}


async def test_a_project_is_backed_up_in_its_group_and_restored_by_members_and_admins(
    service: BackupService, world: BackupWorld, api_client, namespace, tmp_path
):
    """A project backed up as the backup uid in the project's group; a member lists it and
    restores into their own home as themselves; someone outside is refused; an admin restores
    into a folder of the project's own."""
    home = await _alice_home(world, api_client, namespace, tmp_path)
    identity = await IdentityStore(api_client, namespace).identity("alice", ["cms-ml"])
    uid, gid = identity.uid, identity.group_gids["cms-ml"]
    folder = world.projects[names.slug("cms-ml")] / names.slug("cms-ml")
    folder.mkdir(parents=True)
    os.chown(folder, uid, gid)
    folder.chmod(0o2770)
    (folder / "results.csv").write_text("a,b\n1,2\n")
    os.chown(folder / "results.csv", uid, gid)
    (folder / "results.csv").chmod(0o640)

    started = await service.start_backup(ALICE, "project", "cms-ml")
    assert (await _wait(service, ALICE, started["id"]))["state"] == "succeeded"
    repository = world.repository(repos.project("cms-ml"))
    assert (repository.stat().st_uid, repository.stat().st_gid) == (backup_cluster.BACKUP_UID, gid)
    assert repository.stat().st_mode & 0o777 == 0o750
    with pytest.raises(UserError) as outside:
        await service.archives(BOB, "project", "cms-ml")
    assert outside.value.status == 403
    # bob's status request about the project's backup: not found.
    with pytest.raises(UserError):
        await service.status(BOB, started["id"])

    archive = (await service.archives(ALICE, "project", "cms-ml"))[0]["name"]
    assert archive == started["archive"]
    restore = await service.start_restore(ALICE, "project", "cms-ml", archive, "results.csv")
    assert (await _wait(service, ALICE, restore["id"]))["state"] == "succeeded"
    restored = home / paths.RESTORED_FOLDER / archive / "results.csv"
    assert restored.read_text() == "a,b\n1,2\n" and restored.stat().st_uid == uid

    admin = await service.start_restore(ADMIN, "project", "cms-ml", archive, "results.csv", "old")
    assert admin["destination"] == "/home/shared/cms-ml/old/results.csv"
    assert (await _wait(service, ADMIN, admin["id"]))["state"] == "succeeded"
    assert (folder / "old" / "results.csv").read_text() == "a,b\n1,2\n"
    assert (folder / "old" / "results.csv").stat().st_gid == gid
