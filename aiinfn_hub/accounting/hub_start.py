"""Accounting in the hub process: started from jupyterhub_config.d/55-accounting.py, opt-in.

With c.AiInfnAccounting.database_url unset nothing happens and nothing more is imported (no
psycopg). Set, once the hub has its whole configuration: the platform state is built, the
inventory watch starts at once, finished pods included, with the feed (accounting/feed.py)
attached, and a task migrates the ledger (retrying while the database is away: events wait in
the writer's queue meanwhile), then runs the writer; at shutdown the writer flushes once more.
Failures are logged by class, never with the URL.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from traitlets import TraitError
from traitlets.config import Config

from ..hubprocess import starting_hub
from .settings import AiInfnAccounting, libpq_url, sqlalchemy_url

# The accounting tasks of this process (the loop keeps only weak references to tasks).
_tasks: set[asyncio.Task] = set()
# The pods the watch follows under accounting: every bound pod, finished ones too, so that a
# pod's finish arrives as a MODIFIED event holding its containers' finishedAt (the inventory
# ignores finished pods itself). Without accounting the watch leaves finished pods out, and the
# API server tells it that one finished with a DELETED event holding its last running state.
# Cheaper than a GET per ended pod: no request at all, one watch event more per pod (its
# removal), and finished pods still kept (a Job's) in each relist's pages.
ACCOUNTED_PODS = "spec.nodeName!="


def start_at_hub_start() -> None:
    """From the hub's configuration: start accounting once the whole configuration is loaded
    (a callback on the hub's loop, as checks.check_at_hub_start), if it is configured."""
    hub = starting_hub()
    if hub is not None:
        asyncio.get_running_loop().call_soon(_start, hub)


def _start(hub: Any) -> None:
    try:
        settings = AiInfnAccounting(config=hub.config)
    except TraitError as error:  # its message names the key, never the URL
        raise SystemExit(f"aiinfn-hub: invalid accounting configuration: {error}") from None
    if not settings.database_url:
        return
    try:
        start(hub.config, settings, hub.log)
    except Exception as error:
        # The platform's own errors (catalog, policy) stop the hub in the start checks.
        hub.log.error("aiinfn-hub: accounting not started (%s)", type(error).__name__)


def start(config: Config, settings: AiInfnAccounting, log: logging.Logger) -> Any:
    """Attach the feed to a new inventory watch, start it and the ledger's task; the writer."""
    from kubespawner.clients import load_config, shared_client

    from aiinfn_hub import names
    from aiinfn_hub.inventory_watch import InventoryWatcher
    from aiinfn_hub.platform_config import AiInfnPlatform
    from aiinfn_hub.spawner import AiInfnSpawner

    from .feed import AccountingFeed
    from .writer import LedgerWriter

    platform = AiInfnSpawner.shared_platform(AiInfnPlatform(config=config))
    if platform.watcher is not None:
        raise RuntimeError("the inventory watch started before accounting")
    writer = LedgerWriter(libpq_url(settings.database_url), limit=settings.queue_limit)
    projects = {names.label_value(key): key for key in platform.catalog.projects}
    feed = AccountingFeed(platform.inventory, writer, projects)
    load_config(host=None, ssl_ca_cert=None, verify_ssl=None)  # as a default KubeSpawner does
    api = shared_client("CoreV1Api").api_client
    platform.watcher = InventoryWatcher(
        api, platform.inventory, pod_field_selector=ACCOUNTED_PODS, accounting=feed
    )
    platform.watcher_start = asyncio.ensure_future(platform.watcher.start(wait=False))
    platform.accounting = writer
    task = asyncio.ensure_future(run(sqlalchemy_url(settings.database_url), writer, log))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return writer


async def run(
    url: str, writer: Any, log: logging.Logger, retry: tuple[float, float] = (1.0, 60.0)
) -> None:
    """Migrate the ledger to its latest schema (until the database lets us), then write events
    until cancelled; flush once more at the end."""
    from . import ledger

    delay = retry[0]
    try:
        while True:
            try:
                await asyncio.to_thread(ledger.upgrade, url)
                break
            except Exception as error:  # the database away, or refusing: events keep waiting
                log.warning(
                    "aiinfn-hub: accounting ledger not migrated (%s); %d events queued, "
                    "retry in %.0fs",
                    type(error).__name__,
                    writer.pending,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, retry[1])
        log.info("aiinfn-hub: accounting ledger migrated; recording allocations")
        await writer.run()
    finally:
        await writer.close(timeout=5.0)
