"""AiInfnBackup: the backup service process (`python -m aiinfn_hub.services.backup`).

It reads the hub's configuration file, like the job service: the catalog is
`c.AiInfnPlatform.*`, the namespace the notebooks' (`c.KubeSpawner.namespace`: the Jobs mount the
same claims), the storage `c.AiInfnStorage.*`, its own settings `c.AiInfnBackup.*`. It talks to
Kubernetes with its own credentials ($KUBECONFIG or the in-cluster service account), never a
user's and never the hub's; it mounts no repository (docs/backup.md).
"""

from __future__ import annotations

import re
from typing import Any

from traitlets import Dict, Float, Int, TraitError, Unicode, default, validate

from ... import hubstate, k8s
from ...catalog import CatalogError
from ...identity import IdentityStore
from ...platform_config import AiInfnPlatform, notebook_namespace
from ...policy import PolicyError
from ...storage_config import AiInfnStorage
from ..base import ServiceApp
from ..cluster import HealthCheck, list_one_job
from ..ratelimit import RateLimiter
from . import handlers, manifests
from .image import IMAGE
from .operations import BackupConfig, BackupService
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

    @default("namespace")
    def _default_namespace(self) -> str:
        return notebook_namespace(self.config)

    @validate("namespace", "target_claim", "keys_secret")
    def _validate_object_name(self, proposal: Any) -> str:
        if not OBJECT_NAME.fullmatch(proposal["value"]):
            raise TraitError(
                f"AiInfnBackup.{proposal['trait'].name}: {proposal['value']!r} is not an "
                "object name"
            )
        return proposal["value"]

    @validate("image")
    def _validate_image(self, proposal: Any) -> str:
        if not IMAGE_REFERENCE.fullmatch(proposal["value"]):
            raise TraitError(f"AiInfnBackup.image: {proposal['value']!r} is not an image")
        return proposal["value"]

    def service(self, api_client: Any) -> BackupService:
        """The operations, configured from the settings (a bad key stops the start)."""
        try:
            state = hubstate.load(AiInfnPlatform(parent=self))
        except (CatalogError, PolicyError) as error:
            raise TraitError(f"invalid platform configuration: {error}") from None
        storage = AiInfnStorage(config=self.config).settings()
        settings = manifests.BackupSettings(
            image=self.image,
            target_claim=self.target_claim,
            keys_secret=self.keys_secret,
            backup_uid=self.backup_uid,
            priority_class=self.priority_class or None,
            resources=dict(self.job_resources),
        )
        config = BackupConfig(settings, storage, state.catalog, list_timeout=self.list_timeout)
        return BackupService(
            BackupStore(api_client, self.namespace),
            config,
            IdentityStore(api_client, self.namespace, storage),
        )

    async def setup(self) -> None:
        self.api_client = await k8s.api_client()
        try:
            self.backups = self.service(self.api_client)
        except TraitError as error:
            await self.api_client.close()
            raise SystemExit(f"{self.name}: {error}") from None
        self.limiter = RateLimiter(self.rate_limit, self.rate_limit_burst)
        self.health = HealthCheck(lambda: list_one_job(self.api_client, self.namespace))
        self.log.info("%s: Jobs in namespace %s, image %s", self.name, self.namespace, self.image)

    async def cleanup(self) -> None:
        await self.api_client.close()

    def handlers(self) -> list[tuple]:
        return handlers.routes()

    def tornado_settings(self) -> dict[str, Any]:
        return {
            "backups": self.backups,
            "limiter": self.limiter,
            "health": self.health,
            "service_prefix": self.service_prefix.rstrip("/") + "/",
        }


def main(argv: list[str] | None = None) -> None:
    app = AiInfnBackup.instance()
    app.initialize(argv)
    app.start()
