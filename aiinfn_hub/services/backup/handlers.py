"""HTTP side of the backup service: the REST API under api/ and health (public, no detail).

Every handler takes the caller from the hub and passes what the request names to the
operations, which check it (`access`, `paths`); nothing identity-like is read from a body. Each
user has a token bucket (429 with Retry-After): listing runs a Job, so it is not free.
"""

from __future__ import annotations

import logging

from ..base import ServiceHandler
from ..cluster import ClusterHandler
from . import openapi
from .operations import BackupService
from .request import BackupRequest, RestoreRequest, parse

log = logging.getLogger(__name__)


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
        self.write_json(
            {
                "service": "aiinfn-backup",
                "user": self.user().name,
                "openapi": self.settings["service_prefix"] + "api/openapi.json",
            }
        )


class OpenApiHandler(ServiceHandler):
    """The API description; public, like the hub's own REST API documentation."""

    async def prepare(self) -> None:
        pass

    def get(self) -> None:
        self.write_json(openapi.document())


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


class HealthHandler(ServiceHandler):
    """200 while the service can use the Kubernetes API, else 503; public, so it says no more."""

    async def prepare(self) -> None:
        pass

    async def get(self) -> None:
        healthy = await self.settings["health"]()
        self.write_json({"status": "ok" if healthy else "unavailable"}, 200 if healthy else 503)


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
        (r"health", HealthHandler),
    ]
