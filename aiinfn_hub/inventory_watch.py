"""The one async watcher per hub process that keeps an `Inventory` current.

Two list-then-watches (k8s_watch.py): nodes, and pods of all namespaces that can occupy
anything. A relist replaces that kind in the inventory at once; each event is applied in place.
With accounting on, the feed (accounting/feed.py) gets the same pages and events while they are
still whole objects; nodes are listed before pods then, so a pod's node is known.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from kubernetes_asyncio import client

from aiinfn_hub.inventory import Inventory
from aiinfn_hub.k8s_watch import ListWatch

if TYPE_CHECKING:
    from aiinfn_hub.accounting.feed import AccountingFeed

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
        accounting: AccountingFeed | None = None,
    ) -> None:
        self.inventory = inventory
        self.accounting = accounting
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
                self._applied(inventory.apply_node, "node_event"),
                keep=self._kept(inventory.slim_nodes, "node_page"),
                **options,
            ),
            ListWatch(
                "inventory pods",
                self._pod_lister(core.list_pod_for_all_namespaces),
                self._relisted("pods"),
                self._applied(inventory.apply_pod, "pod_event"),
                field_selector=pod_field_selector,
                keep=self._kept(inventory.slim_pods, "pod_page"),
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
        nodes, pods = self.watches
        nodes.start()
        if self.accounting is not None:
            await nodes.synced.wait()  # the feed places each pod on its node
        pods.start()
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
            self._account("nodes_listed" if kind == "nodes" else "pods_listed")
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

    # ---- accounting (a failure there is logged, never a reason to relist the inventory) ----

    def _account(self, method: str, *args: Any) -> None:
        if self.accounting is not None:
            try:
                getattr(self.accounting, method)(*args)
            except Exception:
                self.log.exception("accounting: %s failed", method)

    def _kept(self, slim: Callable[[Any], Mapping[str, Any]], page_method: str) -> Callable:
        """A ListWatch `keep`: the inventory's slim records of a page, the feed seeing it too."""

        def keep(page: list[dict[str, Any]]) -> Any:
            self._account(page_method, page)
            return slim(page).items()

        return keep

    def _applied(self, apply: Callable[[str, Any], bool], event_method: str) -> Callable:
        """A ListWatch `on_event`: the inventory applies it, then the feed sees it."""

        def on_event(event_type: str, obj: dict[str, Any]) -> None:
            apply(event_type, obj)
            self._account(event_method, event_type, obj)

        return on_event

    def _pod_lister(self, list_pods: Callable[..., Any]) -> Callable[..., Any]:
        """The pods' lister, telling the feed when a relist's first page is asked for."""
        if self.accounting is None:
            return list_pods

        def lister(**kwargs: Any) -> Any:
            if not kwargs.get("watch") and not kwargs.get("_continue"):
                self._account("begin_pods")
            return list_pods(**kwargs)

        return lister
