"""Real borg (Debian's 1.2, installed by ./dev) run through the backup service's builders: no
cluster, temporary folders, the same argv and environment a backup or restore Job gets."""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aiinfn_hub.services.backup import borg, locks, manifests, paths, records, repos

TIMEOUT = 300
WAIT_LIMIT = 60.0


@dataclass
class Borg:
    """A repository of alice's home under a temporary backup target, and every borg run kept
    (argv, environment, output) so a test can look for the passphrase in all of them."""

    root: Path
    passphrase: str
    repository: str
    state: Path
    runs: list[tuple[tuple[str, ...], dict[str, str], str, str]] = field(default_factory=list)

    def settings(self, pod: str = "backup-pod-1") -> borg.BorgSettings:
        return borg.BorgSettings(
            passphrase_file=str(self.root / "key" / "passphrase"),
            base_dir=str(self.state),
            host_id=locks.host_id(pod),
        )

    def environment(self, command: borg.BorgCommand) -> dict[str, str]:
        return {"PATH": os.environ["PATH"], "HOME": str(self.root / "runner"), **command.env}

    def run(
        self, command: borg.BorgCommand, cwd: Path | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            list(command.argv),
            cwd=cwd or self.root,
            env=self.environment(command),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        self.runs.append((command.argv, command.env, done.stdout, done.stderr))
        if check:
            assert done.returncode == 0, f"{command.argv[:2]}: {done.stderr}"
        return done

    def restore(self, archive: str, path: str, folder: Path) -> subprocess.CompletedProcess[str]:
        """The restore Job's own script and extract command, on local folders."""
        extract = borg.extract(self.settings(), self.repository, archive, path)
        argv = ("sh", "-c", manifests.RESTORE_SCRIPT, "restore", str(folder), path, *extract.argv)
        command = borg.BorgCommand(argv, extract.env)
        return self.run(command, check=False)


@pytest.fixture
def repo(tmp_path: Path) -> Borg:
    passphrase = f"correct horse {secrets.token_hex(12)}"
    key = tmp_path / "key"
    key.mkdir(mode=0o700)
    (key / "passphrase").write_text(passphrase)
    (key / "passphrase").chmod(0o400)
    (tmp_path / "runner").mkdir()
    target = tmp_path / "target"
    (target / "homes").mkdir(parents=True)
    location = repos.path_under(str(target), repos.home("alice"))
    state = Path(f"{location}.state")
    found = Borg(tmp_path, passphrase, location, state)
    found.run(borg.init(found.settings(), location))
    return found


def _backup_step(runner: Borg, folder: Path, location: str, archive: str) -> borg.BorgCommand:
    """The Job's one container (its script around break-lock, init, prune, compact, create,
    list and info), keeping borg's messages in the runner's folder, with a retention of one
    archive a day."""
    settings = dataclasses.replace(runner.settings(), retention=borg.Retention(1, 0, 0))
    commands = {
        "init": borg.init(settings, location),
        "prune": borg.prune(settings, location),
        "compact": borg.compact(settings, location),
        "create": borg.create(settings, location, archive, ["."]),
        "list": borg.list_archives(settings, location),
        "info": borg.info(settings, location),
    }
    step = manifests.backup_step(str(folder), location, commands)
    script = step.command[2].replace(manifests.MESSAGES, str(runner.root / "messages"))
    return borg.BorgCommand((*step.command[:2], script, *step.command[3:]), commands["init"].env)


def test_the_backup_jobs_script_creates_a_repository_once_then_applies_retention(
    tmp_path: Path,
):
    """New: init, create, list. Existing: prune by the retention (and compact), create, list;
    create's JSON carries the totals after prune."""
    key = tmp_path / "key"
    key.mkdir()
    (key / "passphrase").write_text(secrets.token_hex(16))
    location = str(tmp_path / "target" / "homes" / "bob")
    (tmp_path / "target" / "homes").mkdir(parents=True)
    (tmp_path / "runner").mkdir()
    (tmp_path / "bob").mkdir()
    (tmp_path / "bob" / "notes.txt").write_text("kept\n")
    runner = Borg(tmp_path, (key / "passphrase").read_text(), location, tmp_path / "state")
    step = _backup_step(runner, tmp_path / "bob", location, "2026-12-03T020000Z")
    first = records.step_outputs(runner.run(step).stdout)
    config = (Path(location) / "config").read_bytes()
    assert [a.name for a in records.archives(first["archives"])] == ["2026-12-03T020000Z"]
    for name in ("2026-12-04T020000Z", "2026-12-05T020000Z"):
        runner.run(borg.create(runner.settings(), location, name, ["."]), cwd=tmp_path / "bob")
    step = _backup_step(runner, tmp_path / "bob", location, "2026-12-06T020000Z")
    second = records.step_outputs(runner.run(step).stdout)
    assert (Path(location) / "config").read_bytes() == config
    created = records.create_result(second["create"])
    kept = [a.name for a in records.archives(second["archives"])]
    # All made today: prune (before create) kept the newest, then create added one.
    assert kept == ["2026-12-05T020000Z", "2026-12-06T020000Z"]
    info = records.repository_info(runner.run(borg.info(runner.settings(), location)).stdout)
    assert created.repository.total_size == info.total_size  # create's totals: after prune


def _home(root: Path, outside: Path) -> Path:
    """A small home: modes, a folder, a dash-named file, symlinks inside and out, a cache."""
    home = root / "home"
    (home / "sub" / "deep").mkdir(parents=True)
    (home / "notebook.ipynb").write_text('{"cells": []}\n')
    (home / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (home / "run.sh").chmod(0o755)
    (home / "private.txt").write_text("mine\n")
    (home / "private.txt").chmod(0o600)
    (home / "-rf").write_text("a file named like an option\n")
    (home / "sub" / "data.bin").write_bytes(secrets.token_bytes(300_000))
    (home / "sub").chmod(0o750)
    (home / "empty").mkdir(mode=0o700)
    (home / "sub" / "deep" / "link-to-notebook").symlink_to("../../notebook.ipynb")
    (home / "outside-file").symlink_to(outside / "secret.txt")
    (home / "outside-dir").symlink_to(outside)
    (home / "dangling").symlink_to("/nonexistent/target")
    (home / ".cache" / "pip").mkdir(parents=True)
    (home / ".cache" / "pip" / "wheel").write_bytes(b"cached")
    if os.geteuid() == 0:
        os.chown(home / "private.txt", 4242, 4343, follow_symlinks=False)
    return home


def _outside(root: Path) -> tuple[Path, bytes]:
    """Another project's folder, and a marker that must never reach alice's archive."""
    outside = root / "other-project"
    outside.mkdir()
    marker = f"PROJECT-SECRET-{secrets.token_hex(16)}".encode()
    (outside / "secret.txt").write_bytes(marker)
    (outside / "nested.txt").write_bytes(marker * 3)
    return outside, marker


def _tree(root: Path, skip: Callable[[str], bool] = lambda _: False) -> dict[str, tuple]:
    """path -> (type and mode, owner, mtime, content or link target), never following links."""
    found: dict[str, tuple] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            relative = str(path.relative_to(root))
            if skip(relative):
                continue
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                content: object = os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                content = path.read_bytes()
            else:
                content = None
            owner = (info.st_uid, info.st_gid)
            mtime = info.st_mtime_ns if not stat.S_ISDIR(info.st_mode) else None
            found[relative] = (info.st_mode, owner, mtime, content)
    return found


def _archive(offset: int = 0) -> str:
    return borg.archive_for(datetime.now(UTC) + timedelta(seconds=offset))


def test_round_trip_is_identical_and_symlinks_stay_symlinks(repo: Borg, tmp_path: Path):
    outside, marker = _outside(tmp_path)
    home = _home(tmp_path, outside)
    archive = _archive()
    created = records.created(
        repo.run(borg.create(repo.settings(), repo.repository, archive, ["."]), cwd=home).stdout
    )
    assert created.name == archive and created.files == 5  # regular files only

    listing = repo.run(borg.list_paths(repo.settings(), repo.repository, archive))
    items = {item.path: item for item in records.items(listing.stdout.splitlines())}
    assert items["outside-dir"].type == "l" and items["outside-dir"].link_target == str(outside)
    assert items["sub/deep/link-to-notebook"].link_target == "../../notebook.ipynb"
    assert not [path for path in items if paths.is_within(path, "outside-dir")][1:]
    assert not [path for path in items if paths.is_within(path, ".cache")]

    restored = tmp_path / "restored-home"
    done = repo.restore(archive, "", restored)
    assert done.returncode == 0, done.stderr
    expected = _tree(home, skip=lambda path: paths.is_within(path, ".cache"))
    assert _tree(restored) == expected
    assert (restored / "outside-dir").is_symlink() and (restored / "outside-file").is_symlink()
    for path in restored.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert marker not in path.read_bytes(), path


def test_a_restore_lands_in_its_folder_and_never_overwrites(repo: Borg, tmp_path: Path):
    outside, _ = _outside(tmp_path)
    home = _home(tmp_path, outside)
    archive = _archive()
    repo.run(borg.create(repo.settings(), repo.repository, archive, ["."]), cwd=home)
    target = paths.user_target(archive, "sub")
    folder = tmp_path / "alice" / target.folder
    (tmp_path / "alice").mkdir()

    done = repo.restore(target.archive, target.path, folder)
    assert done.returncode == 0, done.stderr
    assert _tree(folder / "sub") == _tree(home / "sub")
    dashed = repo.restore(archive, "-rf", folder)
    assert dashed.returncode == 0, dashed.stderr
    assert (folder / "-rf").read_bytes() == (home / "-rf").read_bytes()

    (folder / "sub" / "data.bin").write_bytes(b"changed since")
    before = _tree(tmp_path / "alice")
    again = repo.restore(target.archive, target.path, folder)
    assert again.returncode == manifests.RESTORE_EXISTS_EXIT
    assert "already exists; nothing was restored" in again.stderr
    assert _tree(tmp_path / "alice") == before


def test_a_second_backup_of_unchanged_data_adds_almost_nothing(repo: Borg, tmp_path: Path):
    outside, _ = _outside(tmp_path)
    home = _home(tmp_path, outside)
    for index in range(200):
        (home / f"small-{index}.txt").write_text(f"note {index}\n" * 20)
    (home / "large.bin").write_bytes(secrets.token_bytes(4_000_000))

    first, second = _archive(), _archive(1)
    settings = repo.settings()
    one = records.created(
        repo.run(borg.create(settings, repo.repository, first, ["."]), cwd=home).stdout
    )
    two = records.created(
        repo.run(borg.create(settings, repo.repository, second, ["."]), cwd=home).stdout
    )
    assert one.original_size == two.original_size > 4_000_000
    assert one.deduplicated_size > 4_000_000
    # What each run added: the second, only its own metadata, well under 1% of the data.
    assert two.deduplicated_size < one.original_size / 100
    assert two.dedup_ratio is not None and two.dedup_ratio > 100
    # borg info: what each archive holds alone now (both share every chunk of data).
    for name in (first, second):
        now = records.archive_info(repo.run(borg.info(settings, repo.repository, name)).stdout)
        assert abs(now.original_size - one.original_size) < 10_000  # info counts metadata
        assert now.deduplicated_size < one.original_size / 100

    totals = records.repository_info(repo.run(borg.info(settings, repo.repository)).stdout)
    assert totals.encryption == "repokey-blake2"
    # Both archives' bytes (metadata counted a little differently from create's stats).
    assert abs(totals.total_size - (one.original_size + two.original_size)) < 100_000
    # Stored once: about what the first run added (plus the manifest and such).
    assert totals.unique_compressed_size < one.deduplicated_size * 1.05
    assert totals.dedup_ratio is not None and totals.dedup_ratio > 1.9
    listed = records.archives(repo.run(borg.list_archives(repo.settings(), repo.repository)).stdout)
    assert [(a.name, a.checkpoint) for a in listed] == [(first, False), (second, False)]


def _segments(repository: str) -> int:
    return sum(1 for _ in (Path(repository) / "data").rglob("*") if _.is_file())


def _wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_LIMIT
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def _kill_mid_create(repo: Borg, home: Path) -> subprocess.Popen:
    """Start a create as pod 1 and SIGKILL it once it holds the lock and has written data."""
    command = borg.create(repo.settings("backup-pod-1"), repo.repository, _archive(), ["."])
    segments = _segments(repo.repository)
    process = subprocess.Popen(
        list(command.argv),
        cwd=home,
        env=repo.environment(command),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    lock = Path(repo.repository) / locks.EXCLUSIVE
    _wait_for(lambda: process.poll() is not None or lock.is_dir(), "borg to take the lock")
    _wait_for(
        lambda: process.poll() is not None or _segments(repo.repository) > segments,
        "borg to write a segment",
    )
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=TIMEOUT)
    return process


def test_a_killed_backup_leaves_a_usable_repository(repo: Borg, tmp_path: Path):
    home = tmp_path / "big-home"
    home.mkdir()
    for index in range(60):
        (home / f"chunk-{index}.bin").write_bytes(secrets.token_bytes(2_000_000))
    killed = _kill_mid_create(repo, home)
    assert killed.returncode == -signal.SIGKILL, "borg finished before it could be killed"

    state = locks.read(Path(repo.repository))
    assert [holder.pod for holder in state.holders] == ["backup-pod-1"]
    # borg's cache (in the state folder beside the repository) keeps the dead pod's lock too.
    cache = locks.read_caches(repo.state)
    assert [holder.pod for holder in cache.holders] == ["backup-pod-1"]
    state = locks.merge(state, cache)
    # Pod 2 meets the dead pod's lock: borg keeps a lock of another host for ever.
    blocked = repo.run(
        borg.create(repo.settings("backup-pod-2"), repo.repository, _archive(5), ["."]),
        cwd=home,
        check=False,
    )
    assert blocked.returncode == 2 and "lock" in blocked.stderr.lower()
    assert not locks.decide(state, {"backup-pod-1", "backup-pod-2"}).break_lock
    decision = locks.decide(state, {"backup-pod-2"})
    assert decision.break_lock, decision.reason

    pod2 = repo.settings("backup-pod-2")
    repo.run(borg.break_lock(pod2, repo.repository))
    assert not locks.read(Path(repo.repository)).present
    assert not locks.read_caches(repo.state).present
    repo.run(borg.create(pod2, repo.repository, _archive(10), ["."]), cwd=home)
    repo.run(borg.check(pod2, repo.repository))
    listed = records.archives(repo.run(borg.list_archives(pod2, repo.repository)).stdout)
    assert [archive.checkpoint for archive in listed][-1] is False
    restored = tmp_path / "restored"
    done = repo.restore(listed[-1].name, "chunk-59.bin", restored)
    assert done.returncode == 0, done.stderr
    assert (restored / "chunk-59.bin").read_bytes() == (home / "chunk-59.bin").read_bytes()


def test_the_passphrase_is_in_no_argv_environment_or_output(repo: Borg, tmp_path: Path):
    outside, _ = _outside(tmp_path)
    home = _home(tmp_path, outside)
    archive = _archive()
    settings = repo.settings()
    repo.run(borg.create(settings, repo.repository, archive, ["."]), cwd=home)
    repo.run(borg.list_archives(settings, repo.repository))
    repo.run(borg.list_paths(settings, repo.repository, archive))
    repo.run(borg.info(settings, repo.repository, archive))
    repo.run(borg.prune(settings, repo.repository))
    repo.run(borg.compact(settings, repo.repository))
    repo.run(borg.check(settings, repo.repository))
    assert repo.restore(archive, "notebook.ipynb", tmp_path / "out").returncode == 0
    assert len(repo.runs) >= 9
    for argv, env, stdout, stderr in repo.runs:
        assert "BORG_PASSPHRASE" not in env
        assert repo.passphrase not in " ".join([*argv, *env.values(), stdout, stderr])
    # borg keeps each archive's command line: ours, without the passphrase.
    info = repo.run(borg.info(settings, repo.repository, archive)).stdout
    assert repo.passphrase not in info and '"command_line"' in info


def test_a_wrong_passphrase_is_refused(repo: Borg):
    (repo.root / "key" / "passphrase").chmod(0o600)
    (repo.root / "key" / "passphrase").write_text("not the passphrase")
    done = repo.run(borg.list_archives(repo.settings(), repo.repository), check=False)
    assert done.returncode == 2 and "passphrase" in done.stderr.lower()


SETPRIV = shutil.which("setpriv")
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or SETPRIV is None, reason="runs borg as other uids (root and setpriv)"
)
MEMBER, STRANGER, BACKUP_UID, PROJECT_GID = 100001, 100002, 990, 200001


def _as(uid: int, gid: int, groups: tuple[int, ...], command: borg.BorgCommand):
    """The command run with a pod's numeric identity, as the Job's securityContext sets it."""
    ids = ["--groups", ",".join(map(str, groups))] if groups else ["--clear-groups"]
    argv = (str(SETPRIV), f"--reuid={uid}", f"--regid={gid}", *ids, *command.argv)
    return borg.BorgCommand(argv, command.env)


def _owned_folder(path: Path, uid: int, gid: int, mode: int = 0o700) -> Path:
    path.mkdir(parents=True)
    os.chown(path, uid, gid)
    path.chmod(mode)
    return path


@pytest.fixture
def shared_tmp():
    """A temporary folder other uids can traverse (pytest's own is root's, mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix="aiinfn-backup-test-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path)


@needs_root
def test_project_members_restore_from_a_read_only_repository_others_cannot(shared_tmp: Path):
    """A project is backed up as the backup uid in the project's group (umask 0027): a member's
    restore, as their own uid, reads it through the group without taking borg's lock (the
    restore Job mounts it read-only); someone outside the project reads nothing."""
    passphrase = shared_tmp / "key" / "passphrase"
    _owned_folder(passphrase.parent, 0, 0, 0o755)
    passphrase.write_text(f"project {secrets.token_hex(12)}")
    passphrase.chmod(0o444)  # the Secret's file mode: one uid per pod
    target = _owned_folder(shared_tmp / "target" / "projects", BACKUP_UID, 0, 0o711)
    repository = repos.project("cms-ml")
    location = repos.path_under(str(target.parent), repository)
    source = _owned_folder(shared_tmp / "cms-ml", 0, PROJECT_GID, 0o2770)
    (source / "results.csv").write_text("a,b\n1,2\n")
    (source / "results.csv").chmod(0o640)
    os.chown(source / "results.csv", MEMBER, PROJECT_GID)

    def settings(state: Path, umask: str = "0077") -> borg.BorgSettings:
        return borg.BorgSettings(
            passphrase_file=str(passphrase), base_dir=str(state), umask=umask, lock_wait=1
        )

    backup = settings(Path(f"{location}.state"), umask="0027")
    runner = Borg(shared_tmp, passphrase.read_text(), location, Path(backup.base_dir))
    backup_as = (BACKUP_UID, PROJECT_GID, (PROJECT_GID,))
    runner.run(_as(*backup_as, borg.init(backup, location)))
    archive = _archive()
    runner.run(_as(*backup_as, borg.create(backup, location, archive, ["."])), cwd=source)

    home = _owned_folder(shared_tmp / "home" / "alice", MEMBER, MEMBER)
    state = _owned_folder(shared_tmp / "alice-state", MEMBER, MEMBER)
    reader = settings(state)
    locked = borg.list_archives(reader, location)
    assert runner.run(_as(MEMBER, MEMBER, (PROJECT_GID,), locked), check=False).returncode == 2

    extract = borg.extract(reader, location, archive, "results.csv")
    folder = home / "restored" / archive
    script = ("sh", "-c", manifests.RESTORE_SCRIPT, "restore", str(folder), "results.csv")
    restore = borg.BorgCommand((*script, *extract.argv), extract.env)
    runner.run(_as(MEMBER, MEMBER, (PROJECT_GID,), restore), cwd=home)
    assert (folder / "results.csv").read_text() == "a,b\n1,2\n"
    assert (folder / "results.csv").stat().st_uid == MEMBER

    stranger_state = _owned_folder(shared_tmp / "bob-state", STRANGER, STRANGER)
    listing = borg.list_archives(settings(stranger_state), location, bypass_lock=True)
    refused = runner.run(_as(STRANGER, STRANGER, (), listing), check=False)
    assert refused.returncode == 2 and archive not in refused.stdout
