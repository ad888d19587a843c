"""What the backup service does for a caller: list their archives, list a folder of one, start
a restore and read how it went, start a backup. The hub says who calls; `access` decides what
they may use before anything is created.

The service never mounts a repository. Reading one (archives, folders) is a short Job running
`borg list` as the caller (an admin: as whoever owns that repository) with only that repository
mounted read-only and its one passphrase (`listing`); the service reads the Job's log and
deletes it. docs/backup.md says why.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ... import labels
from ...catalog import Catalog
from ...errors import UserError
from ...identity import IdentityStore
from ...storage_config import StorageSettings
from ..base import HubUser
from . import access, borg, listing, manifests, paths, records
from .access import NotFound
from .repos import Repository
from .store import BackupStore

log = logging.getLogger(__name__)

RUN_ID_CHARS = string.ascii_lowercase + string.digits
RUN_ID_LENGTH = 10
RUN_NAME = re.compile(r"(backup|restore)-(home|project)-[0-9a-f]{12}-[a-z0-9]{1,20}")
MAX_LISTING_BYTES = 8 * 1024 * 1024
MAX_MESSAGE_BYTES = 4096
DESTINATION = labels.RESTORE_DESTINATION
ARCHIVE = labels.BACKUP_ARCHIVE


class Unavailable(UserError):
    """The backup storage could not be read now (the detail goes to the log only)."""

    def __init__(self, log_detail: str, status: int = 502) -> None:
        super().__init__(
            "the backups could not be read just now; try again later or ask an admin",
            reason="backup-unavailable",
            log_detail=log_detail,
            status=status,
        )


@dataclass(frozen=True)
class BackupConfig:
    """What the operations need besides the cluster: Job settings, storage, the catalog."""

    settings: manifests.BackupSettings
    storage: StorageSettings
    catalog: Catalog
    list_timeout: float = 120.0
    poll_seconds: float = 0.5
    archives_cache_seconds: float = 30.0


def new_run_id() -> str:
    return "".join(secrets.choice(RUN_ID_CHARS) for _ in range(RUN_ID_LENGTH))


def job_state(job: Mapping[str, Any]) -> str:
    """`succeeded`, `failed` or `running`, from the Job's conditions."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") == "Complete":
            return "succeeded"
        if condition.get("status") == "True" and condition.get("type") == "Failed":
            return "failed"
    return "running"


def exit_code(pod: Mapping[str, Any] | None) -> int | None:
    """The exit code of the pod's (one) container, once it has ended."""
    statuses = ((pod or {}).get("status") or {}).get("containerStatuses") or []
    terminated = (statuses[0].get("state") or {}).get("terminated") if statuses else None
    return terminated.get("exitCode") if terminated else None


def archive_document(archive: records.ArchiveStats) -> dict[str, Any]:
    """An archive for its users: when it was made and its sizes (original, compressed, and
    deduplicated: what only it holds)."""
    return {
        "name": archive.name,
        "time": archive.start.isoformat(),
        "files": archive.files,
        "original_size": archive.original_size,
        "compressed_size": archive.compressed_size,
        "deduplicated_size": archive.deduplicated_size,
    }


def item_document(item: records.Item) -> dict[str, Any]:
    kinds = {"d": "folder", "-": "file", "l": "symlink"}
    document = {
        "path": item.path,
        "type": kinds.get(item.type, "other"),
        "mode": item.mode,
        "size": item.size,
        "mtime": item.mtime.isoformat(),
    }
    if item.type == "l":
        document["link_target"] = item.link_target
    return document


class BackupService:
    """The operations, for one caller at a time; identity always comes from the hub."""

    def __init__(self, store: BackupStore, config: BackupConfig, identities: IdentityStore):
        self.store = store
        self.config = config
        self.identities = identities
        self._archives: dict[str, tuple[float, list[records.ArchiveStats]]] = {}

    # -- who and which -------------------------------------------------------------------------

    def _member_of(self, caller: HubUser) -> list[str]:
        return [p.key for p in self.config.catalog.projects_of(caller.groups)]

    def _repository(self, caller: HubUser, kind: object, name: object) -> Repository:
        """The repository named, if the caller may use it (else Forbidden, nothing created)."""
        repository = access.repository(kind, name, self.config.catalog.projects)
        access.authorise(caller, repository, self._member_of(caller))
        return repository

    async def _exists(self, repository: Repository) -> bool:
        """A repository exists once its passphrase does (written before its first backup)."""
        settings = self.config.settings
        return await self.store.has_passphrase(settings.keys_secret, repository.key)

    async def _reader(self, caller: HubUser, repository: Repository) -> manifests.RunAs:
        """Who reads (and restores from) a repository: the caller, with their project groups,
        when it is theirs; for an admin, whoever owns it."""
        member_of = self._member_of(caller)
        if access.is_own(caller, repository, member_of):
            identity = await self.identities.identity(caller.name, member_of)
            return manifests.restore_identity(identity)
        if repository.kind == "home":
            identity = await self.identities.identity(repository.name)
            return manifests.home_backup_identity(identity)
        gid = await self.identities.gid(repository.name)
        return manifests.project_backup_identity(self.config.settings, gid)

    # -- reading a repository through a Job ----------------------------------------------------

    async def _wait(self, name: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.config.list_timeout
        while True:
            job = await self.store.get_job(name)
            if job is None:
                raise Unavailable(f"listing Job {name} disappeared")
            if job_state(job) != "running":
                return job
            if time.monotonic() > deadline:
                raise Unavailable(f"listing Job {name} still running", status=504)
            await asyncio.sleep(self.config.poll_seconds)

    async def _read(
        self, caller: HubUser, repository: Repository, archive: str | None, folder: str = ""
    ) -> str:
        """Run a listing Job as the reader and return its log (borg's JSON)."""
        run_as = await self._reader(caller, repository)
        job = manifests.make_list_job(
            self.config.settings, repository, caller.name, run_as, new_run_id(), archive, folder
        )
        name = job["metadata"]["name"]
        await self.store.create_job(job)
        try:
            state = job_state(await self._wait(name))
            pod = await self.store.job_pod(name)
            if pod is None:
                raise Unavailable(f"listing Job {name}: {state}, no pod")
            limit = MAX_LISTING_BYTES if state == "succeeded" else MAX_MESSAGE_BYTES
            text = await self.store.log(pod["metadata"]["name"], "list", limit)
        finally:
            await self.store.delete_job(name)
        if state != "succeeded":
            if archive is not None and "does not exist" in text:
                raise NotFound(f"no archive called {archive!r}")
            raise Unavailable(f"listing Job {name} failed ({exit_code(pod)}): {text[-500:]}")
        if len(text.encode()) >= MAX_LISTING_BYTES:
            raise UserError("this folder has too many entries to list", status=413)
        return text

    async def _archive_list(
        self, caller: HubUser, repository: Repository
    ) -> list[records.ArchiveStats]:
        cached = self._archives.get(repository.key)
        if cached and time.monotonic() - cached[0] < self.config.archives_cache_seconds:
            return cached[1]
        try:
            found = listing.archives_with_sizes(await self._read(caller, repository, None))
        except records.BorgOutputError as error:
            raise Unavailable(f"archives of {repository.key}: {error}") from None
        self._archives[repository.key] = (time.monotonic(), found)
        return found

    # -- the operations ------------------------------------------------------------------------

    async def archives(self, caller: HubUser, kind: object, name: object) -> list[dict[str, Any]]:
        """The repository's archives, newest first (none before its first backup)."""
        repository = self._repository(caller, kind, name)
        if not await self._exists(repository):
            return []
        return [archive_document(a) for a in await self._archive_list(caller, repository)]

    async def paths(
        self, caller: HubUser, kind: object, name: object, archive: object, folder: object = ""
    ) -> list[dict[str, Any]]:
        """The entries directly inside `folder` ("" the top) of one archive."""
        repository = self._repository(caller, kind, name)
        archive_name = paths.archive_name(archive)
        inner = paths.relative_path(folder, "folder")
        if not await self._exists(repository):
            raise NotFound(f"no archive called {archive_name!r}")
        text = await self._read(caller, repository, archive_name, inner)
        try:
            return [item_document(item) for item in listing.children(text, inner)]
        except records.BorgOutputError as error:
            raise Unavailable(f"items of {repository.key}::{archive_name}: {error}") from None

    def _destination(
        self, caller: HubUser, repository: Repository, plan: access.RestorePlan
    ) -> manifests.Destination:
        storage = self.config.storage
        if plan.into == "own-home":
            return manifests.home_destination(storage, caller.name)
        if repository.kind == "home":
            return manifests.home_destination(storage, repository.name)
        return manifests.project_destination(storage, repository.name)

    async def start_restore(
        self,
        caller: HubUser,
        kind: object,
        name: object,
        archive: object,
        path: object,
        folder: object = None,
    ) -> dict[str, Any]:
        """Start a restore Job; refusals (who, what, where, an unknown archive) create nothing.
        A destination that exists is refused by the Job itself, before borg runs: its state
        then says `refused` (409)."""
        repository = self._repository(caller, kind, name)
        plan = access.restore_plan(
            caller, repository, self._member_of(caller), archive, path, folder
        )
        target = plan.target
        if not await self._exists(repository):
            raise NotFound(f"no archive called {target.archive!r}")
        names = {a.name for a in await self._archive_list(caller, repository)}
        if target.archive not in names:
            raise NotFound(f"no archive called {target.archive!r}")
        run_as = await self._reader(caller, repository)
        destination = self._destination(caller, repository, plan)
        job = manifests.make_restore_job(
            self.config.settings, repository, caller.name, run_as, target, destination, new_run_id()
        )
        where = f"{destination.root.rstrip('/')}/{target.destination}"
        job["metadata"]["annotations"].update({DESTINATION: where, ARCHIVE: target.archive})
        await self.store.create_job(job)
        log.info("restore %s started by %s", job["metadata"]["name"], caller.name)
        return {
            "id": job["metadata"]["name"],
            "archive": target.archive,
            "path": target.path,
            "destination": where,
            "state": "running",
        }

    async def start_backup(self, caller: HubUser, kind: object, name: object) -> dict[str, Any]:
        """Start a backup of a home (as its owner) or a project (as the backup uid in its
        group) now; one at a time per repository, never beside its check (it would meet the
        check's lock). Its passphrase is made on first use."""
        repository = self._repository(caller, kind, name)
        settings = self.config.settings
        prefixes = tuple(
            f"{action}-{repository.kind}-{repository.digest}-" for action in ("backup", "check")
        )
        components = f"{manifests.BACKUP_COMPONENT},{manifests.CHECK_COMPONENT}"
        selector = f"{labels.COMPONENT} in ({components}),{labels.JOB_KIND}={repository.kind}"
        for job in await self.store.list_jobs(selector):
            if job["metadata"]["name"].startswith(prefixes) and job_state(job) == "running":
                raise UserError(
                    f"a backup or check of this {repository.kind} is already running "
                    f"({job['metadata']['name']})",
                    reason="backup-running",
                    status=409,
                )
        await self.store.ensure_passphrase(settings.keys_secret, repository.key)
        if repository.kind == "home":
            identity = await self.identities.identity(repository.name)
            run_as = manifests.home_backup_identity(identity)
        else:
            gid = await self.identities.gid(repository.name)
            run_as = manifests.project_backup_identity(settings, gid)
        archive = borg.archive_for(datetime.now(UTC))
        job = manifests.make_backup_job(
            settings, self.config.storage, repository, run_as, archive, new_run_id()
        )
        job["metadata"]["annotations"][ARCHIVE] = archive
        await self.store.create_job(job)
        self._archives.pop(repository.key, None)
        log.info("backup %s started by %s", job["metadata"]["name"], caller.name)
        return {"id": job["metadata"]["name"], "archive": archive, "state": "running"}

    def _may_see(self, caller: HubUser, job: Mapping[str, Any]) -> bool:
        """Admins see every run; a user their own restores and the backups of what they may
        use."""
        metadata = job.get("metadata") or {}
        job_labels, notes = metadata.get("labels") or {}, metadata.get("annotations") or {}
        component = job_labels.get(labels.COMPONENT)
        if component not in (manifests.BACKUP_COMPONENT, manifests.RESTORE_COMPONENT):
            return False
        if caller.admin:
            return True
        if component == manifests.RESTORE_COMPONENT or job_labels.get(labels.JOB_KIND) == "home":
            return notes.get(labels.OWNER_NAME) == caller.name
        return notes.get(labels.PROJECT) in self._member_of(caller)

    async def status(self, caller: HubUser, run_id: object) -> dict[str, Any]:
        """A backup's or restore's state: running, succeeded, failed, or refused (409: the
        restore's destination existed; nothing was written)."""
        shown = str(run_id)[:80]
        if not isinstance(run_id, str) or not RUN_NAME.fullmatch(run_id):
            raise NotFound(f"no backup or restore {shown!r}")
        job = await self.store.get_job(run_id)
        if job is None or not self._may_see(caller, job):
            raise NotFound(f"no backup or restore {shown!r}")
        notes = job["metadata"].get("annotations") or {}
        restore = job["metadata"]["labels"][labels.COMPONENT] == manifests.RESTORE_COMPONENT
        document: dict[str, Any] = {
            "id": run_id,
            "kind": "restore" if restore else "backup",
            "archive": notes.get(ARCHIVE, ""),
            "state": job_state(job),
        }
        if restore:
            document["destination"] = notes.get(DESTINATION, "")
        if document["state"] == "failed":
            code = exit_code(await self.store.job_pod(run_id))
            if restore and code == manifests.RESTORE_EXISTS_EXIT:
                document.update(
                    state="refused",
                    status=409,
                    message=f"{document['destination']} already exists; nothing was restored. "
                    "Move or rename it, or restore to another folder",
                )
            else:
                document["message"] = f"the {document['kind']} failed; an admin can see why"
        return document
