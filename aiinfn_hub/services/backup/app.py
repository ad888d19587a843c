"""AiInfnBackup: the backup service process (`python -m aiinfn_hub.services.backup`).

It reads the hub's configuration file, like the job service: the catalog is
`c.AiInfnPlatform.*`, the namespace the notebooks' (`c.KubeSpawner.namespace`: the Jobs mount the
same claims), the storage `c.AiInfnStorage.*`, its own settings `c.AiInfnBackup.*`. It talks to
Kubernetes with its own credentials ($KUBECONFIG or the in-cluster service account), never a
user's and never the hub's; it mounts no repository (docs/backup.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
from datetime import timedelta
from typing import Any

from traitlets import Bool, Dict, Float, Int, List, TraitError, Unicode, default, validate

from ... import hubstate, k8s
from ...catalog import CatalogError
from ...identity import IdentityStore
from ...platform_config import AiInfnPlatform, notebook_namespace
from ...policy import PolicyError
from ...storage_config import AiInfnStorage
from ..base import ServiceApp
from ..cluster import HealthCheck, list_one_job
from ..ratelimit import RateLimiter
from . import borg, handlers, manifests, openapi
from .image import IMAGE
from .operations import BackupConfig, BackupService
from .schedule import Policy, parse_daily
from .scheduler import Scheduler, SchedulerConfig
from .store import BackupStore

OBJECT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
IMAGE_REFERENCE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*(@sha256:[a-f0-9]{64})?$")


class AiInfnBackup(ServiceApp):
    """Backups with BorgBackup: users list, browse and restore their own archives."""

    name = "aiinfn-backup"
    description = "The aiinfn-hub backup service: list, browse and restore your backups."

    namespace = Unicode(
        config=True,
        help="""Namespace of the backup, restore and listing Jobs: the notebooks'
        (KubeSpawner.namespace), since they mount the same claims. Default: the spawner's.""",
    )
    image = Unicode(
        IMAGE,
        config=True,
        help="The backup image (images/backup: Debian's borg 1.2 and sh) every Job runs.",
    )
    target_claim = Unicode(
        "aiinfn-backup",
        config=True,
        help="""The backup target's claim (the remote Ceph volume), in the namespace, with the
        folders `homes` (root's, mode 1733) and `projects` (the backup uid's, 0711) at its top.""",
    )
    keys_secret = Unicode(
        "aiinfn-backup-keys",
        config=True,
        help="""Secret holding one passphrase per repository (items `home-<slug>`,
        `project-<slug>`); the service adds a random one the first time a repository is backed
        up and never changes it. Keep `borg key export` copies of the repositories' keys.""",
    )
    backup_uid = Int(
        990,
        min=1,
        config=True,
        help="The uid project backups run as (in the project's group); it owns `projects`.",
    )
    job_resources = Dict(
        default_value={"cpu": "1", "memory": "2Gi"},
        key_trait=Unicode(),
        value_trait=Unicode(),
        config=True,
        help="Requests and limits of every backup, restore and listing Job's container.",
    )
    priority_class = Unicode(
        "", config=True, help="PriorityClass of the Jobs' pods (empty: the cluster's default)."
    )
    list_timeout = Float(
        120.0,
        min=5.0,
        config=True,
        help="""How long a listing (a short Job running borg list as the user) may take before
        the request answers 504; its Job is deleted either way.""",
    )
    rate_limit = Float(
        1.0,
        min=0.001,
        config=True,
        help="Requests per second each user may make on average (a listing runs a Job).",
    )
    rate_limit_burst = Int(
        10, min=1, config=True, help="Requests a user may make at once before the rate applies."
    )

    schedule = Unicode(
        "02:00",
        config=True,
        help="""When the nightly backups start: a time of day in UTC, `HH:MM` (24 h). Each day
        from then on every home (each user in the identity record) and every project folder of
        the catalog is backed up once, at most `max_concurrent_backups` Jobs at a time; a folder
        not made yet is skipped, never created. The first scheduled backups are at the next such
        time after the service starts (see `catch_up`). Empty: no scheduled backups (users and
        admins still start them through the API, and their runs are still recorded).""",
    )
    catch_up = Bool(
        False,
        config=True,
        help="""Whether a service started after today's `schedule` time runs today's backups
        at once (a missed night). Off: the first are at the next scheduled time; a service
        restarted during a night whose backups have begun carries them on either way.""",
    )
    max_concurrent_backups = Int(
        2,
        min=1,
        config=True,
        help="""How many backup and check Jobs may run at once (the scheduler's and those
        started through the API together); the scheduler starts more only below this.""",
    )
    backup_retries = Int(
        2,
        min=0,
        config=True,
        help="How many times a failed scheduled backup is tried again in the same day.",
    )
    backup_retry_delay = Float(
        3600.0,
        min=0.0,
        config=True,
        help="Seconds between a failed scheduled backup and its next try.",
    )
    check_every_days = Int(
        7,
        min=0,
        config=True,
        help="""`borg check` of each repository every this many days, after that day's
        backup succeeded (0: never).""",
    )
    keep_daily = Int(7, min=0, config=True, help="Archives `borg prune` keeps: one a day, days.")
    keep_weekly = Int(4, min=0, config=True, help="Archives `borg prune` keeps: one a week.")
    keep_monthly = Int(6, min=0, config=True, help="Archives `borg prune` keeps: one a month.")
    excludes = List(
        Unicode(),
        default_value=list(borg.DEFAULT_EXCLUDES),
        maxlen=borg.MAX_EXCLUDES,
        config=True,
        help="""What `borg create` leaves out of every backup: borg patterns, each starting
        with its style (`sh:` shell-style, `fm:` fnmatch, `re:` regular expression, `pp:` path
        prefix, `pf:` full path; `borg help patterns`), matched against paths relative to the
        folder backed up (`sh:**/.cache`: every .cache folder). Folders holding a CACHEDIR.TAG
        are always left out. Default: caches and Python bytecode.""",
    )
    records_configmap = Unicode(
        "aiinfn-backup-records",
        config=True,
        help="""ConfigMap where the scheduler keeps each repository's record (last success,
        last failure and why, archives, sizes, dedup ratio, last check); the service owns it.""",
    )
    schedule_interval = Float(
        60.0,
        min=1.0,
        config=True,
        help="Seconds between the scheduler's looks at the cluster (finished runs, what is due).",
    )

    @default("namespace")
    def _default_namespace(self) -> str:
        return notebook_namespace(self.config)

    @validate("schedule")
    def _validate_schedule(self, proposal: Any) -> str:
        if proposal["value"]:
            try:
                parse_daily(proposal["value"])
            except ValueError as error:
                raise TraitError(f"AiInfnBackup.schedule: {error}") from None
        return proposal["value"]

    @validate("namespace", "target_claim", "keys_secret", "records_configmap")
    def _validate_object_name(self, proposal: Any) -> str:
        if not OBJECT_NAME.fullmatch(proposal["value"]):
            raise TraitError(
                f"AiInfnBackup.{proposal['trait'].name}: {proposal['value']!r} is not an "
                "object name"
            )
        return proposal["value"]

    @validate("excludes")
    def _validate_excludes(self, proposal: Any) -> list[str]:
        for pattern in proposal["value"]:
            problem = borg.exclude_problem(pattern)
            if problem:
                raise TraitError(f"AiInfnBackup.excludes: {pattern!r} {problem}")
        return proposal["value"]

    @validate("image")
    def _validate_image(self, proposal: Any) -> str:
        if not IMAGE_REFERENCE.fullmatch(proposal["value"]):
            raise TraitError(f"AiInfnBackup.image: {proposal['value']!r} is not an image")
        return proposal["value"]

    def _settings(self) -> manifests.BackupSettings:
        try:
            retention = borg.Retention(self.keep_daily, self.keep_weekly, self.keep_monthly)
        except ValueError as error:
            raise TraitError(f"AiInfnBackup.keep_daily/weekly/monthly: {error}") from None
        return manifests.BackupSettings(
            image=self.image,
            target_claim=self.target_claim,
            keys_secret=self.keys_secret,
            backup_uid=self.backup_uid,
            priority_class=self.priority_class or None,
            resources=dict(self.job_resources),
            borg=dataclasses.replace(
                borg.BorgSettings(), retention=retention, excludes=tuple(self.excludes)
            ),
        )

    def policy(self) -> Policy:
        return Policy(
            daily_at=self.schedule or "02:00",
            concurrency=self.max_concurrent_backups,
            retries=self.backup_retries,
            retry_delay=timedelta(seconds=self.backup_retry_delay),
            check_every_days=self.check_every_days,
            catch_up=self.catch_up,
        )

    def service(self, api_client: Any) -> tuple[BackupService, Scheduler]:
        """The operations and the scheduler, configured from the settings (a bad key stops the
        start)."""
        try:
            state = hubstate.load(AiInfnPlatform(parent=self))
        except (CatalogError, PolicyError) as error:
            raise TraitError(f"invalid platform configuration: {error}") from None
        storage = AiInfnStorage(config=self.config).settings()
        settings = self._settings()
        config = BackupConfig(settings, storage, state.catalog, list_timeout=self.list_timeout)
        store = BackupStore(api_client, self.namespace)
        identities = IdentityStore(api_client, self.namespace, storage)
        scheduled = SchedulerConfig(
            settings,
            storage,
            state.catalog,
            self.policy(),
            records_configmap=self.records_configmap,
            probe_timeout=self.list_timeout,
            scheduled=bool(self.schedule),
        )
        return BackupService(store, config, identities), Scheduler(store, scheduled, identities)

    async def setup(self) -> None:
        self.api_client = await k8s.api_client()
        try:
            self.backups, self.scheduler = self.service(self.api_client)
        except TraitError as error:
            await self.api_client.close()
            raise SystemExit(f"{self.name}: {error}") from None
        self.limiter = RateLimiter(self.rate_limit, self.rate_limit_burst)
        self.health = HealthCheck(lambda: list_one_job(self.api_client, self.namespace))
        self.schedule_task = asyncio.create_task(self.scheduler.run(self.schedule_interval))
        self.log.info(
            "%s: Jobs in namespace %s, image %s, backups daily at %s UTC",
            self.name,
            self.namespace,
            self.image,
            self.schedule or "(never: no schedule)",
        )

    async def cleanup(self) -> None:
        self.schedule_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.schedule_task
        await self.api_client.close()

    def handlers(self) -> list[tuple]:
        return handlers.routes()

    def tornado_settings(self) -> dict[str, Any]:
        return {
            "openapi": openapi.document,
            "backups": self.backups,
            "scheduler": self.scheduler,
            "metrics": handlers.BackupMetrics(self.scheduler),
            "limiter": self.limiter,
            "health": self.health,
            "service_prefix": self.service_prefix.rstrip("/") + "/",
        }


def main(argv: list[str] | None = None) -> None:
    app = AiInfnBackup.instance()
    app.initialize(argv)
    app.start()
