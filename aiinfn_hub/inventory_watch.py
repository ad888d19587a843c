"""The one async watcher per hub process that keeps an `Inventory` current.

Two list-then-watches (k8s_watch.py): nodes, and pods of all namespaces that can occupy
anything. A relist replaces that kind in the inventory at once; each event is applied in place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio import client

from aiinfn_hub.inventory import Inventory
from aiinfn_hub.k8s_watch import ListWatch

log = logging.getLogger(__name__)

# Pods that cannot occupy anything (unbound or finished) are filtered by the API server; a pod
# that stops matching arrives as DELETED, which is what the inventory wants.
POD_FIELD_SELECTOR = "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed"


class InventoryWatcher:
    """Keeps `inventory` current from the API server behind `api_client` (list-then-watch).

    The hub starts it once (`await start()` returns when both initial lists are applied) and
    reads `inventory.snapshot()` per render; `stats` counts events, relists and errors.
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        inventory: Inventory,
        *,
        page_size: int = 500,
        watch_timeout: int = 300,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        pod_field_selector: str | None = POD_FIELD_SELECTOR,
        logger: logging.Logger | None = None,
    ) -> None:
        self.inventory = inventory
        self.log = logger or log
        self.synced = asyncio.Event()
        self._listed: set[str] = set()
        core = client.CoreV1Api(api_client)
        options: dict[str, Any] = {
            "page_size": page_size,
            "watch_timeout": watch_timeout,
            "backoff_base": backoff_base,
            "backoff_cap": backoff_cap,
            "logger": self.log,
        }
        self.watches = (
            ListWatch(
                "inventory nodes",
                core.list_node,
                self._relisted("nodes"),
                inventory.apply_node,
                keep=lambda page: inventory.slim_nodes(page).items(),
                **options,
            ),
            ListWatch(
                "inventory pods",
                core.list_pod_for_all_namespaces,
                self._relisted("pods"),
                inventory.apply_pod,
                field_selector=pod_field_selector,
                keep=lambda page: inventory.slim_pods(page).items(),
                **options,
            ),
        )

    @property
    def stats(self) -> dict[str, int]:
        """Events, bookmarks, relists, errors and 410s of both watches together."""
        total: dict[str, int] = {}
        for watch in self.watches:
            for key, value in watch.stats().items():
                total[key] = total.get(key, 0) + value
        return total

    def resource_versions(self) -> dict[str, str | None]:
        """The resourceVersion each watch resumes from (None: a relist is due)."""
        nodes, pods = self.watches
        return {"nodes": nodes.resource_version, "pods": pods.resource_version}

    async def start(self, wait: bool = True) -> None:
        """Start watching; with wait, return once nodes and pods have both been listed."""
        for watch in self.watches:
            watch.start()
        if wait:
            await self.synced.wait()

    async def stop(self) -> None:
        """Cancel the watches and wait until their connections are closed."""
        await asyncio.gather(*(watch.stop() for watch in self.watches))
        self._listed.clear()
        self.synced.clear()

    def _relisted(self, kind: str) -> Callable[[list[tuple[str, Any]], str], None]:
        """The `on_relist` of one kind: replace it in the inventory, at once."""

        def replace(records: list[tuple[str, Any]], version: str) -> None:
            self.inventory.replace(**{kind: dict(records)})
            self.log.info(
                "inventory: listed %s at resourceVersion %s (%d nodes, %d pods hold accelerators)",
                kind,
                version,
                self.inventory.node_count,
                self.inventory.pod_count,
            )
            self._listed.add(kind)
            if len(self._listed) == len(self.watches):
                self.synced.set()

        return replace
