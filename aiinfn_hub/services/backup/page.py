"""The backup service's page at /services/backup/, in the hub's look (`pages`): a user's
repositories (their home, their projects), the archives of one, the folders of an archive, and
a restore into ~/restored/<archive>/ with its outcome; admins also see every repository's record
and may open and restore any repository, into a folder they choose.

Server-rendered HTML with forms, no scripts of its own: GET forms and links navigate, POST forms
(with the hub's XSRF token) act. Every handler calls the service's operations exactly as the
REST API does (`handlers.py`), so the page makes the same checks, before anything is created;
a refusal is a page with the operation's message and its 4xx status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tornado import web

from ...errors import UserError
from .. import pages
from ..base import HubUser
from ..cluster import ClusterHandler
from .operations import BackupService
from .request import MAX_BODY_BYTES
from .scheduler import Scheduler, record_document

TITLE = "Backups"
RUN_REFRESH_SECONDS = 3
FORM_FIELDS = ("kind", "name", "archive", "path")
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


@dataclass(frozen=True)
class Crumb:
    """One step of the breadcrumbs above a folder listing: its label and the folder it opens."""

    label: str
    folder: str


def breadcrumbs(archive: str, folder: str) -> list[Crumb]:
    """The archive's top, then each folder down to `folder` ("" is the top)."""
    crumbs = [Crumb(archive, "")]
    parts = folder.split("/") if folder else []
    for index, part in enumerate(parts):
        crumbs.append(Crumb(part, "/".join(parts[: index + 1])))
    return crumbs


def human_size(size: object) -> str:
    """Bytes in binary units (`1.5 MiB`); '' when there is no size to show."""
    if isinstance(size, bool) or not isinstance(size, (int, float)) or size < 0:
        return ""
    value, unit = float(size), 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value, unit = value / 1024, unit + 1
    return f"{int(value)} B" if unit == 0 else f"{value:.1f} {_UNITS[unit]}"


def when(timestamp: object) -> str:
    """An ISO 8601 time as `2026-12-05 02:00:00`, to the second; '' for none."""
    if not isinstance(timestamp, str) or not timestamp:
        return ""
    return timestamp.replace("T", " ")[:19]


def entry_name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


class _Page(ClusterHandler):
    """The page's handlers: the caller from the hub's OAuth cookie; errors are pages too."""

    @property
    def backups(self) -> BackupService:
        return self.settings["backups"]

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = self.as_user_error(kwargs.get("exc_info", (None, None, None))[1])
        if error is not None:
            status_code, message = error.status, error.message
            for name, value in getattr(error, "headers", {}).items():
                self.set_header(name, value)
        else:
            message = "something went wrong; the service log has the details"
        self.show("backup_error.html", status=status_code, message=message)

    def show(self, template: str, status: int = 200, **context: Any) -> None:
        pages.finish_page(
            self,
            template,
            title=TITLE,
            status=status,
            size=human_size,
            when=when,
            **context,
        )

    def member_of(self, caller: HubUser) -> list[str]:
        return [p.key for p in self.backups.config.catalog.projects_of(caller.groups)]


class PageHandler(_Page):
    """GET: the overview; with `kind` and `name` a repository's archives; with `archive` too,
    one folder of that archive (`folder`, "" its top)."""

    @web.authenticated
    async def get(self) -> None:
        caller = self.user()
        kind = self.get_query_argument("kind", "")
        if not kind:
            await self.overview(caller)
            return
        name = self.get_query_argument("name", "")
        archive = self.get_query_argument("archive", "")
        if not archive:
            archives = await self.backups.archives(caller, kind, name)
            self.show(
                "backup_archives.html",
                kind=kind,
                name=name,
                archives=archives,
            )
            return
        folder = self.get_query_argument("folder", "")
        entries = await self.backups.paths(caller, kind, name, archive, folder)
        self.show(
            "backup_folder.html",
            kind=kind,
            name=name,
            archive=archive,
            folder=folder,
            crumbs=breadcrumbs(archive, folder.rstrip("/")),
            entries=entries,
            entry_name=entry_name,
        )

    async def overview(self, caller: HubUser) -> None:
        """The caller's repositories; for admins, every repository's record too."""
        repositories = [("home", caller.name)]
        repositories += [("project", key) for key in self.member_of(caller)]
        records: list[dict[str, Any]] = []
        if caller.admin:
            scheduler: Scheduler = self.settings["scheduler"]
            found = await scheduler.read_records()
            records = [record_document(found[key]) for key in sorted(found)]
        self.show(
            "backup.html",
            repositories=repositories,
            records=records,
            projects=sorted(self.backups.config.catalog.projects),
        )


class _Form(_Page):
    """A POST form: the fields read as strings (the operations check them), the body bounded as
    the API's."""

    def field(self, name: str) -> str:
        if len(self.request.body) > MAX_BODY_BYTES:
            raise UserError(f"the form is larger than {MAX_BODY_BYTES // 1024} KiB", status=413)
        return self.get_body_argument(name, "")


class RestoreFormHandler(_Form):
    """Restore a file or folder (`path`, "" everything) of an archive; admins may name a
    `folder` inside the repository's own volume. Then the run's page."""

    async def post(self) -> None:
        caller = self.user()
        kind, name, archive, path = (self.field(f) for f in FORM_FIELDS)
        folder = self.field("folder") or None
        run = await self.backups.start_restore(caller, kind, name, archive, path, folder)
        self.redirect(f"{self.settings['service_prefix']}runs/{run['id']}", status=303)


class BackupFormHandler(_Form):
    """Back up a home or project folder now (as the API's POST api/backups). Then the run's
    page."""

    async def post(self) -> None:
        caller = self.user()
        run = await self.backups.start_backup(caller, self.field("kind"), self.field("name"))
        self.redirect(f"{self.settings['service_prefix']}runs/{run['id']}", status=303)


class RunPageHandler(_Page):
    """A backup's or restore's state; the page reloads itself while it runs. A refused restore
    (its destination existed, nothing written) answers 409 with the reason."""

    @web.authenticated
    async def get(self, run_id: str) -> None:
        run = await self.backups.status(self.user(), run_id)
        running = run["state"] == "running"
        self.show(
            "backup_run.html",
            status=int(run.get("status", 200)),
            run=run,
            refresh_seconds=RUN_REFRESH_SECONDS if running else 0,
        )
