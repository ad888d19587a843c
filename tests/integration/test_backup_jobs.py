"""The backup and restore Jobs of aiinfn_hub/services/backup/manifests.py run for real on the dev
cluster: the pod runner plays the backup image with this machine's Debian borg 1.2, on the dev
storage's folders, in a namespace enforcing Pod Security "restricted". The test makes what an
installer would (target claim, keys Secret, the target's folders) and the Jobs the service will
create; the Jobs themselves run as the home's owner and the user who asked."""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
from aiinfn_dev import devstorage

from aiinfn_hub import k8s
from aiinfn_hub.identity import Identity
from aiinfn_hub.services.backup import borg, listing, manifests, paths, records, repos
from tests import backup_cluster
from tests.backup_cluster import BackupWorld, pod_report, run_job, tree
from tests.integration.test_storage import run_pod, storage_pod

pytestmark = pytest.mark.integration

ALICE = 100001


@pytest_asyncio.fixture(loop_scope="session")
async def world(devcluster, core, namespace, storage) -> BackupWorld:
    found = backup_cluster.world_in(devcluster, namespace, devstorage.claim_folders(storage))
    found.passphrases.update(
        await backup_cluster.keys_secret(
            core,
            namespace,
            found.settings.keys_secret,
            [
                *(repos.home(user) for user in ("alice", "bob", "carol", "dave")),
                repos.project("cms-ml"),
            ],
        )
    )
    return found


def _outside(root: Path) -> tuple[Path, bytes]:
    """Another project's folder, and a marker that must never reach alice's archive."""
    outside = root / "other-project"
    outside.mkdir()
    marker = f"PROJECT-SECRET-{secrets.token_hex(16)}".encode()
    (outside / "secret.txt").write_bytes(marker)
    return outside, marker


def _backup_job(world: BackupWorld, username: str, uid: int, run_id: str) -> dict:
    archive = borg.archive_for(datetime.now(UTC))
    job = manifests.make_backup_job(
        world.settings,
        world.storage,
        repos.home(username),
        manifests.home_backup_identity(Identity(uid)),
        archive,
        run_id,
    )
    job["metadata"]["annotations"]["archive"] = archive
    return job


async def _step_log(core, namespace: str, job: str, step: str) -> str:
    pods = await core.list_namespaced_pod(namespace, label_selector=f"job-name={job}")
    name = pods.items[0].metadata.name
    answer = core.read_namespaced_pod_log(name, namespace, container=step, _preload_content=False)
    return await k8s.call_text(answer)


async def _report_output(core, namespace: str, job: str, output: str) -> str:
    """One output of the backup's container (create, archives, info)."""
    text = await _step_log(core, namespace, job, manifests.BACKUP_STEP)
    return records.step_outputs(text)[output]


async def _backup(batch, world: BackupWorld, username: str, uid: int, run_id: str) -> str:
    archive = borg.archive_for(datetime.now(UTC))
    job = manifests.make_backup_job(
        world.settings,
        world.storage,
        repos.home(username),
        manifests.home_backup_identity(Identity(uid)),
        archive,
        run_id,
    )
    assert await run_job(batch, world.namespace, job) == "Complete"
    return archive


def _restore_job(world: BackupWorld, username: str, uid: int, target, run_id: str) -> dict:
    return manifests.make_restore_job(
        world.settings,
        repos.home(username),
        username,
        manifests.restore_identity(Identity(uid)),
        target,
        manifests.home_destination(world.storage, username),
        run_id,
    )


async def test_a_home_backed_up_by_a_job_is_restored_by_the_users_job(
    world: BackupWorld, batch, core, tmp_path
):
    outside, marker = _outside(tmp_path)
    home = backup_cluster.make_home(world, "alice", ALICE, outside)
    before = tree(home)
    archive = await _backup(batch, world, "alice", ALICE, "b1")
    repository = world.repository(repos.home("alice"))
    assert (repository / "config").exists()
    assert repository.stat().st_uid == ALICE  # created by alice's own Job
    assert oct(repository.stat().st_mode & 0o777) == oct(0o700)

    target = paths.user_target(archive, "")
    job = _restore_job(world, "alice", ALICE, target, "r1")
    outcome = await run_job(batch, world.namespace, job)
    assert outcome == "Complete", await pod_report(core, world.namespace, job["metadata"]["name"])
    restored = home / paths.RESTORED_FOLDER / archive
    # Byte-identical, modes, owners, mtimes and symlinks (as links, never followed); .cache
    # excluded by the backup.
    assert tree(restored) == {k: v for k, v in before.items() if not k.startswith(".cache")}
    assert (restored / "outside-dir").is_symlink()
    assert os.readlink(restored / "outside-dir") == str(outside)
    for path in restored.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert marker not in path.read_bytes(), path
    assert tree(home, skip=(paths.RESTORED_FOLDER,)) == before  # the home itself untouched
    # The restored folders are alice's (the Job ran as her uid), private.
    for folder in (home / paths.RESTORED_FOLDER, restored):
        assert folder.stat().st_uid == ALICE and folder.stat().st_mode & 0o077 == 0

    # A single file, into its own folder: only that file.
    one = paths.user_target(archive, "work/data.bin")
    job = _restore_job(world, "alice", ALICE, one, "r2")
    # The destination exists (the first restore made it): refused, nothing written.
    snapshot = tree(home)
    assert await run_job(batch, world.namespace, job) == "Failed"
    codes, log = await pod_report(core, world.namespace, job["metadata"]["name"])
    assert codes == [("restore", manifests.RESTORE_EXISTS_EXIT)]
    assert "already exists; nothing was restored" in log
    assert tree(home) == snapshot
    for passphrase in world.passphrases.values():
        assert passphrase not in log


async def test_a_restore_into_an_existing_destination_fails_cleanly(
    world: BackupWorld, batch, core, tmp_path
):
    outside, _ = _outside(tmp_path)
    home = backup_cluster.make_home(world, "bob", ALICE + 1, outside)
    archive = await _backup(batch, world, "bob", ALICE + 1, "b1")
    target = paths.user_target(archive, "work")
    existing = home / target.folder / "work"
    existing.mkdir(parents=True)
    (existing / "newer.txt").write_text("written after the backup\n")
    for path in (home / paths.RESTORED_FOLDER, home / target.folder, existing):
        os.chown(path, ALICE + 1, ALICE + 1)
    os.chown(existing / "newer.txt", ALICE + 1, ALICE + 1)
    snapshot = tree(home)

    job = _restore_job(world, "bob", ALICE + 1, target, "r1")
    assert await run_job(batch, world.namespace, job) == "Failed"
    codes, log = await pod_report(core, world.namespace, job["metadata"]["name"])
    assert codes == [("restore", manifests.RESTORE_EXISTS_EXIT)]
    assert f"{target.destination} already exists; nothing was restored" in log
    assert tree(home) == snapshot

    # A dangling symlink in the way counts as existing too (never written through).
    link_target = paths.user_target(archive, "notebook.ipynb")
    (home / link_target.folder / "notebook.ipynb").symlink_to("/nonexistent/elsewhere")
    os.chown(home / link_target.folder / "notebook.ipynb", ALICE + 1, ALICE + 1,
             follow_symlinks=False)  # fmt: skip
    snapshot = tree(home)
    job = _restore_job(world, "bob", ALICE + 1, link_target, "r2")
    assert await run_job(batch, world.namespace, job) == "Failed"
    assert tree(home) == snapshot


async def test_a_home_not_made_yet_is_skipped_never_created(world: BackupWorld, batch, core):
    """The Job mounts the homes' claim read-only and looks carol's home up: it is not there, so
    nothing is backed up (no archive), the run succeeds saying so, and no folder is made."""
    carol = ALICE + 2
    job = _backup_job(world, "carol", carol, "s1")
    name = job["metadata"]["name"]
    outcome = await run_job(batch, world.namespace, job)
    assert outcome == "Complete", await pod_report(core, world.namespace, name)
    assert not world.home("carol").exists() and not world.home("carol").is_symlink()
    created = await _report_output(core, world.namespace, name, manifests.CREATE_OUTPUT)
    assert records.create_result(created) == records.CreateResult(None, skipped=records.SKIPPED)
    assert (
        listing.archives(
            await _report_output(core, world.namespace, name, manifests.ARCHIVES_OUTPUT)
        )
        == []
    )
    totals = records.repository_info(
        await _report_output(core, world.namespace, name, manifests.INFO_OUTPUT)
    )
    assert totals.total_size == 0  # no create JSON: the report step asked borg info
    # The repository exists (init ran), so listings and the next backup find it.
    assert (world.repository(repos.home("carol")) / "config").exists()


async def test_an_unreadable_file_is_a_warning_and_the_archive_holds_the_rest(
    world: BackupWorld, batch, core, tmp_path
):
    """borg exits 1 on a file it cannot read (root's, 0600, in dave's home): the archive is
    complete but for that file, so the run succeeds and its create step prints the warning."""
    dave = ALICE + 3
    outside, _ = _outside(tmp_path)
    home = backup_cluster.make_home(world, "dave", dave, outside)
    (home / "root-only.txt").write_text("not dave's to read\n")
    (home / "root-only.txt").chmod(0o600)  # root's: the Job runs as dave
    job = _backup_job(world, "dave", dave, "w1")
    name = job["metadata"]["name"]
    outcome = await run_job(batch, world.namespace, job)
    assert outcome == "Complete", await pod_report(core, world.namespace, name)
    result = records.create_result(
        await _report_output(core, world.namespace, name, manifests.CREATE_OUTPUT)
    )
    assert (
        result.archive is not None
        and result.archive.name == job["metadata"]["annotations"]["archive"]
    )
    assert "root-only.txt" in result.warnings and "Permission denied" in result.warnings
    archives = listing.archives(
        await _report_output(core, world.namespace, name, manifests.ARCHIVES_OUTPUT)
    )
    assert [a.name for a in archives] == [result.archive.name]
    assert result.archive.files >= 5  # the rest of the home is in it


async def test_a_project_backed_up_before_any_member_leaves_their_first_server_working(
    world: BackupWorld, batch, core
):
    """cms-ml has no folder yet: its backup (as the backup uid in the project's group) skips it
    and makes nothing, so the first member's notebook pod (the spawner's storage-init, run for
    real) makes the folder as theirs, 2770 in the project's group, and starts."""
    gid = 200031
    job = manifests.make_backup_job(
        world.settings,
        world.storage,
        repos.project("cms-ml"),
        manifests.project_backup_identity(world.settings, gid),
        borg.archive_for(datetime.now(UTC)),
        "p1",
    )
    name = job["metadata"]["name"]
    assert await run_job(batch, world.namespace, job) == "Complete", await pod_report(
        core, world.namespace, name
    )
    claim = world.projects["cms-2dml"]
    assert not (claim / "cms-2dml").exists()
    created = await _report_output(core, world.namespace, name, manifests.CREATE_OUTPUT)
    assert records.create_result(created).skipped == records.SKIPPED

    erin = Identity(100041, {"cms-ml": gid})
    command = "touch /home/shared/cms-ml/first-day"
    pod = storage_pod("erin-notebook", "erin", erin, command, ("cms-ml",))
    ended = await run_pod(core, world.namespace, pod)
    assert ended.status.phase == "Succeeded", ended.status
    folder = (claim / "cms-2dml").stat()
    assert (folder.st_uid, folder.st_gid, folder.st_mode & 0o7777) == (100041, gid, 0o2770)
    assert (claim / "cms-2dml" / "first-day").exists()
