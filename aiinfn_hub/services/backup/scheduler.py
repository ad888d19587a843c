"""The backup service's scheduler: every tick it reads the cluster (the backup and check Jobs,
the records ConfigMap), takes each finished run into its repository's record, and starts what
`schedule` says is due, up to the concurrency limit. It keeps nothing but a copy of the records
in memory (for metrics), so a restarted service carries on where it was.

Before a backup of a repository whose last run failed, a short lock probe Job (as whoever backs
it up, the kind's folder read-only) prints its locks; `locks.decide`, with a complete listing
of the namespace's pods, says whether the dead run's lock may be broken, and the backup Job then
runs `borg break-lock` first. A lock that must stay is recorded as that run's failure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ... import identity, labels, names
from ...catalog import Catalog
from ...identity import IdentityStore
from ...storage_config import StorageSettings
from . import borg, listing, locks, manifests, records, repos, schedule
from .operations import exit_code, job_state, new_run_id
from .repos import Repository
from .schedule import Record, Run
from .store import BackupStore

log = logging.getLogger(__name__)
COMPONENTS = {manifests.BACKUP_COMPONENT: "backup", manifests.CHECK_COMPONENT: "check"}
SELECTOR = f"{labels.COMPONENT} in ({','.join(COMPONENTS)})"
MAX_REPORT_BYTES = 1024 * 1024
MAX_MESSAGE_BYTES = 4096


@dataclass(frozen=True)
class SchedulerConfig:
    """What the scheduler needs besides the cluster."""

    settings: manifests.BackupSettings
    storage: StorageSettings
    catalog: Catalog
    policy: schedule.Policy
    records_configmap: str = "aiinfn-backup-records"
    # False (no schedule): finished runs (started through the API) are still recorded.
    scheduled: bool = True
    probe_timeout: float = 120.0
    poll_seconds: float = 0.5


def run_of(job: Mapping[str, Any]) -> Run | None:
    """A backup or check Job as a run of its repository; None for anything else."""
    metadata = job.get("metadata") or {}
    job_labels, notes = metadata.get("labels") or {}, metadata.get("annotations") or {}
    kind = COMPONENTS.get(job_labels.get(labels.COMPONENT, ""))
    repository_kind = job_labels.get(labels.JOB_KIND)
    owner = notes.get(labels.OWNER_NAME if repository_kind == "home" else labels.PROJECT)
    created = metadata.get("creationTimestamp")
    if kind is None or repository_kind not in repos.KIND_FOLDERS or not owner or not created:
        return None
    key = Repository(repository_kind, owner).key
    started = datetime.fromisoformat(created.replace("Z", "+00:00"))
    return Run(metadata["name"], key, kind, started, job_state(job))  # type: ignore[arg-type]


def failed_step(pod: Mapping[str, Any] | None) -> tuple[str, int] | None:
    """The first step (init container, then container) that ended with a non-zero code."""
    status = (pod or {}).get("status") or {}
    steps = [*(status.get("initContainerStatuses") or ()), *(status.get("containerStatuses") or ())]
    for entry in steps:
        code = exit_code({"status": {"containerStatuses": [entry]}})
        if code:
            return entry["name"], code
    return None


def record_document(record: Record) -> dict[str, Any]:
    """A record for admins: times ISO 8601 (UTC), sizes in bytes; `last_run` is bookkeeping."""
    document = dataclasses.asdict(record)
    del document["last_run"]
    for field, value in document.items():
        if isinstance(value, datetime):
            document[field] = value.isoformat()
    return document


class Scheduler:
    """One tick at a time; `records` is the last copy read (or written) of the records."""

    def __init__(
        self, store: BackupStore, config: SchedulerConfig, identities: IdentityStore
    ) -> None:
        self.store = store
        self.config = config
        self.identities = identities
        self.records: dict[str, Record] = {}
        # The first period run is the next one to begin (`schedule.period_open`).
        self.started = datetime.now(UTC)

    async def run(self, interval: float) -> None:
        """Tick every `interval` seconds until cancelled; a failed tick is logged and retried."""
        while True:
            try:
                await self.tick(datetime.now(UTC))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("backup scheduler: the tick failed; trying again later")
            await asyncio.sleep(interval)

    async def read_records(self) -> dict[str, Record]:
        data, _ = await self.store.read_config_map(self.config.records_configmap)
        self.records = {key: schedule.load(key, text) for key, text in data.items()}
        return self.records

    async def tick(self, now: datetime) -> list[schedule.Start]:
        """Harvest finished runs, then start what is due; the records written once."""
        jobs = await self.store.list_jobs(SELECTOR)
        runs = [run for run in map(run_of, jobs) if run is not None]
        data, version = await self.store.read_config_map(self.config.records_configmap)
        known = {key: schedule.load(key, text) for key, text in data.items()}
        before = dict(known)
        for run in sorted(runs, key=lambda r: r.started):
            record = known.get(run.key) or Record(run.key)
            if schedule.is_new(record, run):
                known[run.key] = await self._harvest(record, run)
        repositories = await self._repositories()
        keys = list(repositories)
        starts = (
            schedule.to_start(self.config.policy, keys, known, runs, now, self.started)
            if self.config.scheduled
            else []
        )
        for start in starts:
            repository = repositories[start.key]
            record = known.get(start.key) or Record(start.key)
            known[start.key] = await self._start(repository, start.kind, record, now)
        for key, repository in repositories.items():
            if key in known and not known[key].name:
                known[key] = _named(known[key], repository)
        if known != before and not await self._write(known, version):
            log.warning("backup records: written by someone else meanwhile; next tick again")
        self.records = known
        return starts

    async def _write(self, known: Mapping[str, Record], version: str | None) -> bool:
        data = {key: schedule.dump(record) for key, record in sorted(known.items())}
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.config.records_configmap,
                "labels": {
                    labels.MANAGED_BY: labels.MANAGED_BY_VALUE,
                    labels.PART_OF: labels.PART_OF_VALUE,
                    labels.COMPONENT: "backup-records",
                },
            },
            "data": data,
        }
        return await self.store.write_config_map(body, version)

    async def _repositories(self) -> dict[str, Repository]:
        """The homes of every user in the identity record, then every project of the catalog."""
        data, _ = await self.store.read_config_map(self.config.storage.identity_configmap)
        found: dict[str, Repository] = {}
        candidates = [
            *((repos.home, user) for user in sorted(identity.parse(data).users)),
            *((repos.project, key) for key in sorted(self.config.catalog.projects)),
        ]
        for make, name in candidates:
            try:
                repository = make(name)
                found[repository.key] = repository
            except names.InvalidName as error:
                log.warning("backup scheduler: %r skipped: %s", name, error)
        return found

    async def _harvest(self, record: Record, run: Run) -> Record:
        """A finished run into its record: a backup's report read from its steps' logs."""
        pod = await self.store.job_pod(run.name)
        policy = self.config.policy
        if run.state != "succeeded":
            message = await self._failure(run, pod)
            log.warning("backup scheduler: %s failed: %s", run.name, message)
            return schedule.finished(policy, record, run, None, message)
        if run.kind == "check":
            return schedule.finished(policy, record, run, None)
        try:
            report = await self._report(run, pod)
        except (records.BorgOutputError, LookupError) as error:
            log.warning("backup scheduler: %s: report unreadable: %s", run.name, error)
            return schedule.finished(policy, record, run, None, f"report unreadable: {error}")
        if report.created is None:
            log.info("backup scheduler: %s: %s", run.name, records.SKIPPED)
        elif report.warnings:
            log.warning("backup scheduler: %s succeeded with borg's warnings", run.name)
        else:
            log.info("backup scheduler: %s succeeded", run.name)
        return schedule.finished(policy, record, run, report)

    async def _failure(self, run: Run, pod: Mapping[str, Any] | None) -> str:
        """Why a run failed, for admins: the step, its exit code and borg's last messages."""
        if pod is None:
            return f"{run.kind} {run.name}: its pod is gone (deleted or killed before it ended)"
        step = failed_step(pod)
        if step is None:
            phase = (pod.get("status") or {}).get("phase")
            return f"{run.kind} {run.name}: stopped (pod {phase}; deleted, killed or timed out)"
        name, code = step
        text = await self.store.log(pod["metadata"]["name"], name, MAX_MESSAGE_BYTES)
        name = manifests.failed_borg_step(text) or name
        # borg check exits 1 when it found damage: an error in the repository, not a warning.
        damaged = run.kind == "check" and code == 1
        outcome = "damage found" if damaged else records.outcome(code)
        return f"{run.kind} {run.name}: step {name} exited {code} ({outcome}): {text.strip()}"

    async def _report(self, run: Run, pod: Mapping[str, Any] | None) -> schedule.Report:
        if pod is None:
            raise LookupError("the pod is gone")
        name = pod["metadata"]["name"]
        outputs = records.step_outputs(
            await self.store.log(name, manifests.BACKUP_STEP, MAX_REPORT_BYTES)
        )
        missing = {manifests.CREATE_OUTPUT, manifests.ARCHIVES_OUTPUT} - set(outputs)
        if missing:
            raise LookupError(f"the backup printed no {', '.join(sorted(missing))}")
        created = records.create_result(outputs[manifests.CREATE_OUTPUT])
        info = created.repository
        if info is None:  # skipped: borg info gave the totals
            if manifests.INFO_OUTPUT not in outputs:
                raise LookupError(f"the backup printed no {manifests.INFO_OUTPUT}")
            info = records.repository_info(outputs[manifests.INFO_OUTPUT])
        archives = listing.archives(outputs[manifests.ARCHIVES_OUTPUT])
        if created.archive is not None and created.archive.name not in {a.name for a in archives}:
            raise LookupError(f"archive {created.archive.name} is not in the repository")
        return schedule.Report(created.archive, info, len(archives), created.warnings)

    async def _run_as(self, repository: Repository) -> manifests.RunAs:
        if repository.kind == "home":
            found = await self.identities.identity(repository.name)
            return manifests.home_backup_identity(found)
        gid = await self.identities.gid(repository.name)
        return manifests.project_backup_identity(self.config.settings, gid)

    async def _start(
        self, repository: Repository, kind: schedule.RunKind, record: Record, now: datetime
    ) -> Record:
        """Start a backup (after the lock rule, when the last run failed) or a check; a lock
        that must stay is this run's failure."""
        settings = self.config.settings
        run_as = await self._run_as(repository)
        await self.store.ensure_passphrase(settings.keys_secret, repository.key)
        record = _named(record, repository)
        if kind == "check":
            job = manifests.make_check_job(settings, repository, run_as, new_run_id())
            await self.store.create_job(job)
            log.info("backup scheduler: check %s started", job["metadata"]["name"])
            return record
        unlock = False
        if schedule.needs_lock_check(record):
            state, decision = await self._lock_decision(repository, run_as)
            level = logging.WARNING if state.present else logging.INFO
            log.log(level, "backup scheduler: %s: %s", repository.key, decision.reason)
            if state.present and not decision.break_lock:
                failed = Run("", repository.key, "backup", now, "failed")
                message = f"not started: the repository's lock stays: {decision.reason}"
                return schedule.finished(self.config.policy, record, failed, None, message)
            unlock = decision.break_lock
        archive = borg.archive_for(now)
        job = manifests.make_backup_job(
            settings, self.config.storage, repository, run_as, archive, new_run_id(), unlock
        )
        job["metadata"]["annotations"][labels.BACKUP_ARCHIVE] = archive
        await self.store.create_job(job)
        log.info("backup scheduler: backup %s started", job["metadata"]["name"])
        return record

    async def _lock_decision(
        self, repository: Repository, run_as: manifests.RunAs
    ) -> tuple[locks.LockState, locks.Decision]:
        """Probe the repository's locks in a short Job, then decide with every pod listed; a
        probe that fails keeps any lock (an unreadable state)."""
        job = manifests.make_lock_job(self.config.settings, repository, run_as, new_run_id())
        name = job["metadata"]["name"]
        await self.store.create_job(job)
        try:
            ended = await self._finish(name)
            pod = await self.store.job_pod(name)
            if ended != "succeeded" or pod is None:
                detail = f"the lock probe {name}: {ended} ({exit_code(pod)})"
                state = locks.LockState(True, (), (detail,))
                return state, locks.decide(state, ())
            text = await self.store.log(pod["metadata"]["name"], "locks", MAX_REPORT_BYTES)
        finally:
            await self.store.delete_job(name)
        state = locks.parse_probe(text)
        return state, locks.decide(state, locks.live_pods(await self.store.list_pods()))

    async def _finish(self, name: str) -> str:
        deadline = time.monotonic() + self.config.probe_timeout
        while time.monotonic() < deadline:
            job = await self.store.get_job(name)
            if job is None:
                return "vanished"
            if job_state(job) != "running":
                return job_state(job)
            await asyncio.sleep(self.config.poll_seconds)
        return "timed out"


def _named(record: Record, repository: Repository) -> Record:
    if record.kind == repository.kind and record.name == repository.name:
        return record
    return dataclasses.replace(record, kind=repository.kind, name=repository.name)
