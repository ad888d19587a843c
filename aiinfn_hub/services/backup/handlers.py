"""HTTP side of the backup service: the REST API under api/, the per-repository records for
admins, metrics (a hub token with `read:metrics`) and health (public, no detail).

Every handler takes the caller from the hub and passes what the request names to the
operations, which check it (`access`, `paths`); nothing identity-like is read from a body. Each
user has a token bucket (429 with Retry-After): listing runs a Job, so it is not free.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..base import OpenApiHandler
from ..cluster import ClusterHandler, HealthHandler, MetricsHandler
from .access import Forbidden
from .operations import BackupService
from .page import BackupFormHandler, PageHandler, RestoreFormHandler, RunPageHandler
from .request import BackupRequest, RestoreRequest, parse
from .schedule import ARCHIVED, ARCHIVED_WITH_WARNINGS
from .scheduler import Scheduler, record_document

log = logging.getLogger(__name__)
LABELS = ["kind", "name"]
# (metric, help, the record's field): one gauge per repository with a value.
GAUGES = (
    (
        "aiinfn_backup_last_success_timestamp_seconds",
        "When the repository's last successful backup started (Unix time).",
        "last_success",
    ),
    (
        "aiinfn_backup_last_failure_timestamp_seconds",
        "When the repository's last failed backup or check started (Unix time).",
        "last_failure",
    ),
    ("aiinfn_backup_archives", "Archives in the repository after prune.", "archives"),
    (
        "aiinfn_backup_original_bytes",
        "Original size of every archive in the repository, before dedup and compression.",
        "original_size",
    ),
    (
        "aiinfn_backup_stored_bytes",
        "Bytes the repository stores, deduplicated and compressed.",
        "stored_size",
    ),
    (
        "aiinfn_backup_last_archive_added_bytes",
        "Bytes the last successful backup added to the repository (deduplicated, compressed).",
        "last_archive_added",
    ),
    (
        "aiinfn_backup_dedup_ratio",
        "Original bytes of every archive per byte stored.",
        "dedup_ratio",
    ),
)


class BackupMetrics(Collector):
    """The records the scheduler last read, as gauges by repository (kind, name)."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        records = list(self.scheduler.records.values())
        for metric, text, field in GAUGES:
            family = GaugeMetricFamily(metric, text, labels=LABELS)
            for record in records:
                value = getattr(record, field)
                if value is None or not record.kind:
                    continue
                number = value.timestamp() if hasattr(value, "timestamp") else float(value)
                family.add_metric([record.kind, record.name], number)
            yield family
        checked = GaugeMetricFamily(
            "aiinfn_backup_last_check_success",
            "1 when the repository's last `borg check` passed, 0 when it failed.",
            labels=LABELS,
        )
        for record in records:
            if record.last_check_ok is not None and record.kind:
                checked.add_metric([record.kind, record.name], float(record.last_check_ok))
        yield checked
        warned = GaugeMetricFamily(
            "aiinfn_backup_last_backup_warnings",
            "1 when the repository's last successful backup had borg's warnings (the archive "
            "lacks what they name, such as unreadable files), 0 when it had none.",
            labels=LABELS,
        )
        for record in records:
            if record.kind and record.last_outcome in (ARCHIVED, ARCHIVED_WITH_WARNINGS):
                warning = record.last_outcome == ARCHIVED_WITH_WARNINGS
                warned.add_metric([record.kind, record.name], float(warning))
        yield warned

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _Backup(ClusterHandler):
    """The backup service's handlers: authenticated, rate-limited, 503 when the cluster is away."""

    @property
    def backups(self) -> BackupService:
        return self.settings["backups"]

    def started(self, run: dict) -> None:
        """202 with the run's Location: it goes on in its Job."""
        self.set_header("Location", f"{self.settings['service_prefix']}api/runs/{run['id']}")
        self.write_json(run, 202)


class ApiRootHandler(_Backup):
    async def get(self) -> None:
        self.write_api_root("aiinfn-backup", self.user())


class ArchivesHandler(_Backup):
    async def get(self, kind: str, name: str) -> None:
        archives = await self.backups.archives(self.user(), kind, name)
        self.write_json({"archives": archives})


class PathsHandler(_Backup):
    async def get(self, kind: str, name: str, archive: str) -> None:
        caller = self.user()
        folder = self.get_query_argument("folder", "")
        entries = await self.backups.paths(caller, kind, name, archive, folder)
        self.write_json({"entries": entries})


class RestoresHandler(_Backup):
    async def post(self) -> None:
        caller = self.user()
        asked = parse(RestoreRequest, self.request.body)
        run = await self.backups.start_restore(
            caller, asked.kind, asked.name, asked.archive, asked.path, asked.folder
        )
        self.started(run)


class BackupsHandler(_Backup):
    async def post(self) -> None:
        caller = self.user()
        asked = parse(BackupRequest, self.request.body)
        self.started(await self.backups.start_backup(caller, asked.kind, asked.name))


class RunHandler(_Backup):
    async def get(self, run_id: str) -> None:
        self.write_json(await self.backups.status(self.user(), run_id))


class RecordsHandler(_Backup):
    """Every repository's record (last success, last failure and why, archives, sizes, dedup
    ratio, last check), read from the cluster; admins only."""

    async def get(self) -> None:
        if not self.user().admin:
            raise Forbidden("only admins see the backup records")
        scheduler: Scheduler = self.settings["scheduler"]
        found = await scheduler.read_records()
        documents = [record_document(found[key]) for key in sorted(found)]
        self.write_json({"repositories": documents})


def routes() -> list[tuple]:
    part = r"([^/]+)"
    repository = rf"api/repositories/{part}/{part}"
    return [
        (r"api/?", ApiRootHandler),
        (r"api/openapi\.json", OpenApiHandler),
        (rf"{repository}/archives/?", ArchivesHandler),
        (rf"{repository}/archives/{part}/paths/?", PathsHandler),
        (r"api/restores/?", RestoresHandler),
        (r"api/backups/?", BackupsHandler),
        (rf"api/runs/{part}/?", RunHandler),
        (r"api/records/?", RecordsHandler),
        (r"?", PageHandler),
        (r"restore", RestoreFormHandler),
        (r"backup", BackupFormHandler),
        (rf"runs/{part}", RunPageHandler),
        (r"metrics", MetricsHandler),
        (r"health", HealthHandler),
    ]
