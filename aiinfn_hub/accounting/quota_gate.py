"""Quota checks where new work starts: the hub's spawner (a notebook server) and the job service
(a job). Built only when c.AiInfnAccounting.quotas is set; nothing here runs otherwise.

Each check opens one connection to the ledger (two queries), bounded by `quota_timeout`. A
database that does not answer lets the work through (fail open, logged by the error's class,
never with the URL), and is not asked again for RETRY_SECONDS: quotas are bookkeeping, and the
platform must not stop, or slow down, with its accounting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from ..errors import UserError
from . import quotas
from .quotas import Quota, QuotaStanding
from .settings import AiInfnAccounting, libpq_url

# After a check the database did not answer, it is not asked again for this long: pages and
# spawns do not each wait quota_timeout through an outage.
RETRY_SECONDS = 30.0
UNAVAILABLE = "GPU-hour quota: the figures cannot be read now"
# The gate of this process and the configuration it was built from (the hub's spawners share
# one configuration object), built on first use.
_shared: tuple[Any, QuotaGate | None] | None = None


class QuotaGate:
    """The quotas of one process and the ledger they are counted from."""

    def __init__(
        self,
        quotas: Sequence[Quota],
        dsn: str,
        model_names: Mapping[str, str],
        timeout: float = 3.0,
        log: logging.Logger | None = None,
    ) -> None:
        self.quotas = tuple(quotas)
        self._dsn = dsn  # holds the password: never logged
        self.model_names = dict(model_names)
        self.timeout = timeout
        self.log = log or logging.getLogger(__name__)
        self._quiet_until = 0.0  # time.monotonic() until which the database is not asked

    async def standings(self, user: str, projects: Sequence[str]) -> list[QuotaStanding] | None:
        """What is left of each quota of `user` and `projects` now; None when the ledger does
        not answer in time (logged)."""
        if not quotas.applicable(self.quotas, user, projects):
            return []
        if time.monotonic() < self._quiet_until:  # down a moment ago: no wait on each page
            return None
        import psycopg

        now = datetime.now(UTC).replace(microsecond=0)
        try:
            async with asyncio.timeout(self.timeout):
                connection = await psycopg.AsyncConnection.connect(
                    self._dsn, connect_timeout=max(1, int(self.timeout))
                )
                async with connection:
                    return await quotas.standings(connection, self.quotas, user, projects, now)
        except (psycopg.Error, OSError, TimeoutError) as error:
            self._quiet_until = time.monotonic() + RETRY_SECONDS
            self.log.warning(
                "Quotas of %s not read: the accounting database did not answer (%s); "
                "work is let through, the next %.0f s without asking it",
                user,
                type(error).__name__,
                RETRY_SECONDS,
            )
            return None

    async def check(self, user: str, model: str, project: str | None = None) -> None:
        """Refuse new work of `user` on accelerator `model` ("" for CPU only) in `project` (None:
        a notebook server, which counts for no project) when a quota it counts against has no
        hours left: a UserError (403, reason "quota") with the figures."""
        if not model:
            return
        found = await self.standings(user, [project] if project else [])
        if not found:
            return
        message = quotas.refusal(quotas.for_work(found, model, project), self.model_names, user)
        if message is not None:
            raise UserError(
                message,
                reason="quota",
                status=403,
                log_detail=f"quota exhausted for {user} on {model} ({project or 'no project'}): "
                + message,
            )

    def notes(
        self, found: list[QuotaStanding] | None, user: str, model: str
    ) -> list[dict[str, Any]]:
        """The spawn form's lines for an accelerator card: what is left of each quota a server
        on `model` counts against (`found`: the user's standings; None: not readable now)."""
        if not model:
            return []
        if found is None:
            applies = [
                q for q, _ in quotas.applicable(self.quotas, user, []) if q.model in (None, model)
            ]
            return [{"text": UNAVAILABLE, "exhausted": False}] if applies else []
        return quotas.form_notes(quotas.for_work(found, model), self.model_names, user)


def shared_gate(
    config: Any, model_names: Mapping[str, str], log: logging.Logger
) -> QuotaGate | None:
    """This process's QuotaGate, or None when no quota is configured (then no query is ever
    made). `config`: the loaded configuration (c.AiInfnAccounting); built once per config."""
    global _shared
    if _shared is None or _shared[0] is not config:
        settings = AiInfnAccounting(config=config)
        parsed = quotas.parse_quotas(settings.quotas)
        url = libpq_url(settings.database_url) if parsed else ""
        gate = QuotaGate(parsed, url, model_names, settings.quota_timeout, log) if parsed else None
        _shared = (config, gate)
    return _shared[1]
