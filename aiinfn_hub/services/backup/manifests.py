"""Backup, check, restore and listing Jobs. Pure; every builder returns plain Kubernetes JSON.

Every pod passes Pod Security "restricted" (non-root, no privilege escalation, no capabilities,
RuntimeDefault seccomp), mounts no service-account token, and runs borg only with argv from
`borg`. Its passphrase is one item of the keys Secret, mounted read-only as a file that
BORG_PASSCOMMAND reads. BORG_HOST_ID names the pod, so a lock it leaves names it (`locks`).

Who the pods run as: a home backup runs as the home's owner (the only unprivileged identity that
can read a 0700 home, and "restricted" allows no CAP_DAC_READ_SEARCH), a project backup as the
dedicated backup uid with the project's gid (umask 0027: the members can read the repository
through that gid); a restore runs as the user who asked, with their own uid and gids, so it
can never write where they could not.

A backup mounts the claim holding its folder whole and read-only, never the folder by subPath
(the kubelet would make a missing one, root's), and skips a folder that is not there; the
target's kind folder (`homes`, `projects`) read-write at the same path `repos.path_under`
gives, so the repository is created on first use (a sub-path the kubelet makes is root's); a
restore mounts only its one repository, read-only. Jobs are not
retried by Kubernetes (backoffLimit 0): a retry would meet the dead pod's lock, so the service
decides, and a failed run is never a success.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ... import labels, names
from ...identity import Identity
from ...storage_config import StorageSettings
from ...volumes import project_claim, project_mount_path
from . import borg, locks, paths, records
from .listing import children_command
from .repos import Repository, path_under

BACKUP_COMPONENT = "backup"
CHECK_COMPONENT = "backup-check"
RESTORE_COMPONENT = "restore"
TARGET_VOLUME = "backup-target"
TARGET_PATH = "/aiinfn/backup-target"
SOURCE_VOLUME = "source"
# The claim holding the home or project folder, mounted whole (read-only, never by subPath): a
# missing subPath folder would be made by the kubelet, owned by root, and break its owner's servers.
SOURCES_PATH = "/aiinfn/sources"
KEY_VOLUME = "backup-key"
KEY_PATH = borg.PASSPHRASE_FILE.rsplit("/", 1)[0]
KEY_FILE = borg.PASSPHRASE_FILE.rsplit("/", 1)[1]
STATE_VOLUME = "borg-state"
DESTINATION_VOLUME = "destination"
POD_NAME_ENV = "AIINFN_POD_NAME"
# One uid per pod and nothing but borg in it: group and other bits would protect nothing, and
# fsGroup is left out (the kubelet would chown the source claims on file systems it can).
KEY_FILE_MODE = 0o444
RESTORE_EXISTS_EXIT = 3
LIST_COMPONENT = "backup-list"
# Where the steps' scripts keep borg's messages (the pod's own /tmp).
MESSAGES = "/tmp/borg-messages"
LIST_DEADLINE_SECONDS = 600
LIST_TTL_SECONDS = 600
# A listing Job (and each step of a backup) keeps borg's own messages aside, shown
# (last 4 KiB) only when borg fails: a successful step's log is borg's JSON output alone
# (`listing` and the scheduler read it).
LIST_SCRIPT = f"""set -u
"$@" 2>{MESSAGES}
code=$?
if [ "$code" -ne 0 ]; then tail -c 4096 {MESSAGES} >&2; fi
exit "$code"
"""
LOCK_COMPONENT = "backup-lock"
# A lock probe prints, for the repository and each of its caches, the names in lock.exclusive
# and the lines of lock.roster (`locks.parse_probe` reads them); it changes nothing.
LOCK_SCRIPT = """set -u
repository=$1
for folder in "$repository" "$repository".state/.cache/borg/*; do
  if [ -d "$folder/lock.exclusive" ] || [ -f "$folder/lock.roster" ]; then
    echo "lock"
    if [ -d "$folder/lock.exclusive" ]; then
      echo "exclusive-folder"
      for entry in "$folder"/lock.exclusive/* "$folder"/lock.exclusive/.[!.]*; do
        if [ -e "$entry" ] || [ -L "$entry" ]; then echo "exclusive ${entry##*/}"; fi
      done
    fi
    roster=$folder/lock.roster
    if [ -f "$roster" ]; then
      echo "roster-file"
      while IFS= read -r line || [ -n "$line" ]; do echo "roster $line"; done < "$roster"
    fi
  fi
done
"""
_RUN_ID = re.compile(r"[a-z0-9]{1,20}")
# The backup Job's one container, and the names of its outputs the scheduler reads.
BACKUP_STEP = "backup"
INFO_OUTPUT = "info"
ARCHIVES_OUTPUT = "archives"
CREATE_OUTPUT = "create"
SKIPPED = records.SKIPPED
WARNINGS_MARK = records.WARNINGS_MARK
STEP_MARK = records.STEP_MARK
_FAILED_STEP = re.compile(r"^backup: step ([a-z-]+) exited \d+$", re.MULTILINE)
# borg prune --list's line for each archive it removes.
PRUNED_LINE = "Pruning archive"
# The borg runs of a backup, in order; each given to BACKUP_SCRIPT as its length and argv (length
# 0: not run).
BACKUP_STEPS = ("break-lock", "init", "prune", "compact", "create", "list", "info")
# A backup in one container (one start, not one per step). break-lock when the lock rule said so.
# A repository that is not there yet is created (init) and not pruned; one that is gets its
# retention applied first (prune), so create's own JSON carries the totals after it (no `borg
# info`), and its space freed (compact) only when prune removed an archive (`--list` names each).
# create: the folder is looked up in its parent (which must be searchable, else it is an error,
# never a skip); a missing one is skipped (nothing created; info then gives the totals), a
# symlink refused; borg's exit 1 is success with warnings, printed after its JSON. Then list.
# Each output follows a STEP_MARK line naming it (`records.step_outputs`); borg's messages are
# shown (last 4 KiB) only when a step fails, and the first failure ends the container with its
# code. Argvs are run as given: eval sees only "${N}" references, never a value.
BACKUP_SCRIPT = f"""set -u
folder=$1 repository=$2
shift 2
run() {{
  count=$1
  shift
  command=
  i=1
  while [ "$i" -le "$count" ]; do command="$command \\"\\${{$i}}\\""; i=$((i + 1)); done
  eval "$command" 2>{MESSAGES}
}}
fail() {{
  echo "backup: step $1 exited $2" >&2
  tail -c 4096 {MESSAGES} >&2
  exit "$2"
}}
if [ "$1" -gt 0 ]; then run "$@" || fail break-lock $?; fi
shift $(($1 + 1))
fresh=
if [ "$1" -gt 0 ] && [ ! -e "$repository/config" ]; then run "$@" || fail init $?; fresh=1; fi
shift $(($1 + 1))
: > {MESSAGES}
if [ "$1" -gt 0 ] && [ -z "$fresh" ]; then run "$@" || fail prune $?; fi
shift $(($1 + 1))
if [ "$1" -gt 0 ] && grep -q '^{PRUNED_LINE}' {MESSAGES}; then run "$@" || fail compact $?; fi
shift $(($1 + 1))
skipped=
if [ "$1" -gt 0 ]; then
  echo "{STEP_MARK}{CREATE_OUTPUT}"
  if [ -L "$folder" ]; then echo "backup: $folder is a symlink, not a folder" >&2; exit 2; fi
  if [ -e "$folder" ]; then
    cd "$folder" || exit 2
    run "$@"
    code=$?
    if [ "$code" -eq 1 ]; then
      echo "{WARNINGS_MARK}"
      tail -c 4096 {MESSAGES}
    elif [ "$code" -ne 0 ]; then
      fail create "$code"
    fi
  elif [ -x "${{folder%/*}}" ]; then
    skipped=1
    echo '{{"skipped": "{SKIPPED}"}}'
  else
    echo "backup: cannot search ${{folder%/*}}" >&2
    exit 2
  fi
fi
shift $(($1 + 1))
if [ "$1" -gt 0 ]; then echo "{STEP_MARK}{ARCHIVES_OUTPUT}"; run "$@" || fail list $?; fi
shift $(($1 + 1))
if [ "$1" -gt 0 ] && [ -n "$skipped" ]; then
  echo "{STEP_MARK}{INFO_OUTPUT}"
  run "$@" || fail info $?
fi
"""
# Never overwrites: the restore's destination must not exist; borg then extracts in its folder.
RESTORE_SCRIPT = f"""set -eu
umask 077
folder=$1 target=$2
shift 2
if [ -n "$target" ]; then destination=$folder/$target; else destination=$folder; fi
if [ -e "$destination" ] || [ -L "$destination" ]; then
  echo "restore: $destination already exists; nothing was restored" >&2
  exit {RESTORE_EXISTS_EXIT}
fi
mkdir -p "$folder"
cd "$folder"
exec "$@"
"""


@dataclass(frozen=True)
class BackupSettings:
    """Cluster-side settings of every backup, check and restore Job."""

    image: str
    target_claim: str = "aiinfn-backup"
    keys_secret: str = "aiinfn-backup-keys"
    backup_uid: int = 990
    image_pull_policy: str | None = None
    priority_class: str | None = None
    deadline_seconds: int = 6 * 3600
    ttl_seconds: int = 24 * 3600
    resources: Mapping[str, str] = field(default_factory=lambda: {"cpu": "1", "memory": "2Gi"})
    borg: borg.BorgSettings = field(default_factory=borg.BorgSettings)


@dataclass(frozen=True)
class Step:
    """One container of a Job: its name and argv; only a step that reads the data (a backup's
    create) mounts the source claim."""

    name: str
    command: tuple[str, ...]
    reads_source: bool = False


@dataclass(frozen=True)
class RunAs:
    """A pod's numeric identity."""

    uid: int
    gid: int
    supplemental_gids: tuple[int, ...] = ()


def job_name(action: str, repository: Repository, run_id: str) -> str:
    """`<action>-<kind>-<digest>-<run id>`: under 63 characters, one per repository and run."""
    if not _RUN_ID.fullmatch(run_id):
        raise ValueError(f"a run id is 1 to 20 lowercase letters and digits, not {run_id!r}")
    return f"{action}-{repository.kind}-{repository.digest}-{run_id}"


def _env(command: borg.BorgCommand) -> list[dict[str, Any]]:
    """borg's environment, and BORG_HOST_ID naming this pod (the downward API's pod name)."""
    env: list[dict[str, Any]] = [
        {"name": key, "value": value} for key, value in command.env.items() if key != "BORG_HOST_ID"
    ]
    env.append({"name": POD_NAME_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    env.append({"name": "BORG_HOST_ID", "value": locks.host_id(f"$({POD_NAME_ENV})")})
    return env


def _container(
    settings: BackupSettings, step: Step, env: list[dict[str, Any]], mounts: list[dict[str, Any]]
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": step.name,
        "image": settings.image,
        "command": list(step.command),
        "env": env,
        "resources": {"requests": dict(settings.resources), "limits": dict(settings.resources)},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
    }
    if settings.image_pull_policy:
        container["imagePullPolicy"] = settings.image_pull_policy
    return container


def _claim(name: str, claim: str, read_only: bool) -> dict[str, Any]:
    return {"name": name, "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}}


def _mount(name: str, path: str, sub_path: str | None, read_only: bool) -> dict[str, Any]:
    mount: dict[str, Any] = {"name": name, "mountPath": path, "readOnly": read_only}
    if sub_path is not None:
        mount["subPath"] = sub_path
    return mount


def _key(settings: BackupSettings, repository: Repository) -> tuple[dict, dict]:
    """Only this repository's passphrase, as the one file BORG_PASSCOMMAND reads."""
    volume = {
        "name": KEY_VOLUME,
        "secret": {
            "secretName": settings.keys_secret,
            "items": [{"key": repository.key, "path": KEY_FILE}],
            "defaultMode": KEY_FILE_MODE,
        },
    }
    return volume, _mount(KEY_VOLUME, KEY_PATH, None, True)


def _scratch(name: str, path: str) -> tuple[dict, dict]:
    return {"name": name, "emptyDir": {}}, _mount(name, path, None, False)


def source(storage: StorageSettings, repository: Repository) -> tuple[dict, dict]:
    """The claim holding the home or the project's folder, whole and read-only: the Job looks
    its folder up there and skips it when missing (a subPath mount would make it)."""
    if repository.kind == "home":
        volume = _claim(SOURCE_VOLUME, storage.home_claim, True)
    else:
        volume = _claim(SOURCE_VOLUME, project_claim(storage, repository.name), True)
    return volume, _mount(SOURCE_VOLUME, SOURCES_PATH, None, True)


def source_folder(repository: Repository) -> str:
    """Where a backup Job finds the home or project folder (`source` mounts its claim)."""
    return f"{SOURCES_PATH}/{repository.slug}"


def _target_folder(settings: BackupSettings, repository: Repository) -> tuple[dict, dict]:
    """The kind's folder of the backup target, read-write (backup and check)."""
    path = f"{TARGET_PATH}/{repository.folder}"
    return (
        _claim(TARGET_VOLUME, settings.target_claim, False),
        _mount(TARGET_VOLUME, path, repository.folder, False),
    )


def _target_repository(settings: BackupSettings, repository: Repository) -> tuple[dict, dict]:
    """Only this repository, read-only (restore)."""
    path = path_under(TARGET_PATH, repository)
    return (
        _claim(TARGET_VOLUME, settings.target_claim, True),
        _mount(TARGET_VOLUME, path, repository.relative_path, True),
    )


def _pod_security(run_as: RunAs) -> dict[str, Any]:
    context: dict[str, Any] = {
        "runAsUser": run_as.uid,
        "runAsGroup": run_as.gid,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if run_as.supplemental_gids:
        context["supplementalGroups"] = list(run_as.supplemental_gids)
        context["supplementalGroupsPolicy"] = "Strict"
    return context


def _metadata(
    name: str, component: str, repository: Repository, owner: str | None
) -> dict[str, Any]:
    """Labels to list and clean up by (component, kind, owner, project), exact names annotated;
    the owner is the home's user or whoever asked for a restore (none for a project backup)."""
    job_labels = {
        labels.MANAGED_BY: labels.MANAGED_BY_VALUE,
        labels.PART_OF: labels.PART_OF_VALUE,
        labels.COMPONENT: component,
        labels.JOB_KIND: repository.kind,
    }
    annotations = {}
    if owner is not None:
        job_labels[labels.OWNER] = names.label_value(owner)
        annotations[labels.OWNER_NAME] = owner
    if repository.kind == "project":
        job_labels[labels.PROJECT] = names.label_value(repository.name)
        annotations[labels.PROJECT] = repository.name
    return {"name": name, "labels": job_labels, "annotations": annotations}


def _mounts(pairs: Sequence[tuple[dict, dict]], step: Step) -> list[dict[str, Any]]:
    return [m for _, m in pairs if step.reads_source or m["name"] != SOURCE_VOLUME]


def _job(
    settings: BackupSettings,
    metadata: dict[str, Any],
    run_as: RunAs,
    steps: Sequence[tuple[Step, borg.BorgCommand]],
    pairs: Sequence[tuple[dict, dict]],
) -> dict[str, Any]:
    """A Job whose steps run in order (all but the last as init containers), never retried."""
    pairs = [*pairs, _scratch("tmp", "/tmp")]
    containers = [
        _container(settings, step, _env(command), _mounts(pairs, step)) for step, command in steps
    ]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": _pod_security(run_as),
        "containers": containers[-1:],
        "volumes": [volume for volume, _ in pairs],
    }
    if containers[:-1]:
        pod_spec["initContainers"] = containers[:-1]
    if settings.priority_class:
        pod_spec["priorityClassName"] = settings.priority_class
    pod_metadata = {
        "labels": dict(metadata["labels"]),
        "annotations": dict(metadata["annotations"]),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "parallelism": 1,
            "completions": 1,
            "backoffLimit": 0,
            "activeDeadlineSeconds": settings.deadline_seconds,
            "ttlSecondsAfterFinished": settings.ttl_seconds,
            "template": {"metadata": pod_metadata, "spec": pod_spec},
        },
    }


def home_backup_identity(identity: Identity) -> RunAs:
    """A home is backed up as its owner: their uid and private gid, no project gids."""
    return RunAs(identity.uid, identity.gid)


def project_backup_identity(settings: BackupSettings, project_gid: int) -> RunAs:
    """A project is backed up as the backup uid in the project's group."""
    return RunAs(settings.backup_uid, project_gid, (project_gid,))


def restore_identity(identity: Identity) -> RunAs:
    """A restore runs as the user who asked: their uid, private gid and project gids."""
    return RunAs(identity.uid, identity.gid, tuple(identity.supplemental_gids))


def _borg(settings: BackupSettings, repository: Repository, base_dir: str) -> borg.BorgSettings:
    umask = "0027" if repository.kind == "project" else "0077"
    return dataclasses.replace(settings.borg, base_dir=base_dir, umask=umask)


def _state_dir(repository: Repository) -> str:
    """borg's cache and security records, kept beside the repository (`<slug>.state`: a slug
    never holds a dot) so the next run reads only changed files."""
    return f"{path_under(TARGET_PATH, repository)}.state"


def failed_borg_step(log: str) -> str | None:
    """The step BACKUP_SCRIPT's `fail` named in a container's log, if any."""
    found = _FAILED_STEP.search(log)
    return found.group(1) if found else None


def backup_step(folder: str, location: str, commands: Mapping[str, borg.BorgCommand]) -> Step:
    """`BACKUP_SCRIPT` with the borg runs named in `commands` (BACKUP_STEPS), each argv after
    its length; a step not named is given as length 0 (not run)."""
    argv = [folder, location]
    for name in BACKUP_STEPS:
        command = commands.get(name)
        argv += [str(len(command.argv)), *command.argv] if command else ["0"]
    return Step(BACKUP_STEP, ("sh", "-c", BACKUP_SCRIPT, BACKUP_STEP, *argv), reads_source=True)


def make_backup_job(
    settings: BackupSettings,
    storage: StorageSettings,
    repository: Repository,
    run_as: RunAs,
    archive: str,
    run_id: str,
    break_lock: bool = False,
) -> dict[str, Any]:
    """One archive of a home or project, in one container (`BACKUP_SCRIPT`): break-lock (only
    when `locks.decide` said so), init the first time, else prune (and compact when prune
    removed an archive), create, list. Its log holds create's JSON (the archive's stats and the
    repository's totals after prune) and the archives (the scheduler's record). A folder that
    is not there is skipped: no archive, nothing created, and borg info gives the totals."""
    config = _borg(settings, repository, _state_dir(repository))
    location = path_under(TARGET_PATH, repository)
    commands = {
        "init": borg.init(config, location),
        "prune": borg.prune(config, location),
        "compact": borg.compact(config, location),
        "create": borg.create(config, location, archive, ["."]),
        "list": borg.list_archives(config, location),
        "info": borg.info(config, location),
    }
    if break_lock:
        commands["break-lock"] = borg.break_lock(config, location)
    step = backup_step(source_folder(repository), location, commands)
    pairs = [
        source(storage, repository),
        _target_folder(settings, repository),
        _key(settings, repository),
    ]
    owner = repository.name if repository.kind == "home" else None
    metadata = _metadata(
        job_name("backup", repository, run_id), BACKUP_COMPONENT, repository, owner
    )
    return _job(settings, metadata, run_as, [(step, commands["create"])], pairs)


def make_lock_job(
    settings: BackupSettings, repository: Repository, run_as: RunAs, run_id: str
) -> dict[str, Any]:
    """A short Job, as whoever backs the repository up, printing its and its caches' locks
    (`LOCK_SCRIPT`) with the kind's folder mounted read-only; no passphrase, no borg."""
    location = path_under(TARGET_PATH, repository)
    step = Step("locks", ("sh", "-c", LOCK_SCRIPT, "locks", location))
    path = f"{TARGET_PATH}/{repository.folder}"
    target = (
        _claim(TARGET_VOLUME, settings.target_claim, True),
        _mount(TARGET_VOLUME, path, repository.folder, True),
    )
    short = dataclasses.replace(
        settings, deadline_seconds=LIST_DEADLINE_SECONDS, ttl_seconds=LIST_TTL_SECONDS
    )
    owner = repository.name if repository.kind == "home" else None
    metadata = _metadata(job_name("locks", repository, run_id), LOCK_COMPONENT, repository, owner)
    nothing = borg.BorgCommand((), {})
    return _job(short, metadata, run_as, [(step, nothing)], [target])


def make_check_job(
    settings: BackupSettings,
    repository: Repository,
    run_as: RunAs,
    run_id: str,
    verify_data: bool = False,
) -> dict[str, Any]:
    """`borg check` of one repository (periodic; --verify-data reads every chunk)."""
    config = _borg(settings, repository, _state_dir(repository))
    command = borg.check(config, path_under(TARGET_PATH, repository), verify_data)
    pairs = [_target_folder(settings, repository), _key(settings, repository)]
    owner = repository.name if repository.kind == "home" else None
    metadata = _metadata(job_name("check", repository, run_id), CHECK_COMPONENT, repository, owner)
    return _job(settings, metadata, run_as, [(Step("check", command.argv), command)], pairs)


def make_list_job(
    settings: BackupSettings,
    repository: Repository,
    requester: str,
    run_as: RunAs,
    run_id: str,
    archive: str | None = None,
    folder: str = "",
) -> dict[str, Any]:
    """A Job listing the repository's archives with their sizes (archive None: `borg info`, one
    call) or one folder of an archive, with only that repository mounted, read-only; short
    deadline and TTL."""
    config = _borg(settings, repository, borg.BASE_DIR)
    location = path_under(TARGET_PATH, repository)
    if archive is None:
        command = borg.info_archives(config, location, bypass_lock=True)
    else:
        command = children_command(config, location, paths.archive_name(archive), folder)
    step = Step("list", ("sh", "-c", LIST_SCRIPT, "list", *command.argv))
    pairs = [
        _target_repository(settings, repository),
        _key(settings, repository),
        _scratch(STATE_VOLUME, borg.BASE_DIR),
    ]
    short = dataclasses.replace(
        settings, deadline_seconds=LIST_DEADLINE_SECONDS, ttl_seconds=LIST_TTL_SECONDS
    )
    name = job_name("list", repository, run_id)
    metadata = _metadata(name, LIST_COMPONENT, repository, requester)
    return _job(short, metadata, run_as, [(step, command)], pairs)


@dataclass(frozen=True)
class Destination:
    """The folder a restore writes into, read-write: a home or a project folder, and where the
    restore Job mounts it."""

    volume: dict[str, Any]
    mount: dict[str, Any]
    root: str


def home_destination(storage: StorageSettings, username: str) -> Destination:
    """A user's home, mounted where their notebook mounts it."""
    volume = _claim(DESTINATION_VOLUME, storage.home_claim, False)
    path = storage.home_mount_path
    return Destination(volume, _mount(DESTINATION_VOLUME, path, names.slug(username), False), path)


def project_destination(storage: StorageSettings, project: str) -> Destination:
    """A project's folder (an admin's restore, or a member's into the project)."""
    volume = _claim(DESTINATION_VOLUME, project_claim(storage, project), False)
    path = project_mount_path(storage, project)
    return Destination(volume, _mount(DESTINATION_VOLUME, path, names.slug(project), False), path)


def make_restore_job(
    settings: BackupSettings,
    repository: Repository,
    requester: str,
    run_as: RunAs,
    target: paths.RestoreTarget,
    destination: Destination,
    run_id: str,
) -> dict[str, Any]:
    """Extract one path of one archive into `<destination>/<folder>`, refusing (exit 3) when
    `<folder>/<path>` exists; the repository is mounted read-only, alone."""
    config = _borg(settings, repository, borg.BASE_DIR)
    location = path_under(TARGET_PATH, repository)
    extract = borg.extract(config, location, target.archive, target.path)
    folder = f"{destination.root.rstrip('/')}/{target.folder}"
    command = ("sh", "-c", RESTORE_SCRIPT, "restore", folder, target.path, *extract.argv)
    pairs = [
        _target_repository(settings, repository),
        (destination.volume, destination.mount),
        _key(settings, repository),
        _scratch(STATE_VOLUME, borg.BASE_DIR),
    ]
    name = job_name("restore", repository, run_id)
    metadata = _metadata(name, RESTORE_COMPONENT, repository, requester)
    return _job(settings, metadata, run_as, [(Step("restore", command), extract)], pairs)
