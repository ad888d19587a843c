"""The one async watcher per hub process that keeps an `Inventory` current.

For nodes and for pods (all namespaces): a paginated LIST, then a WATCH from the list's
resourceVersion, resumed from the last resourceVersion seen (bookmarks included) whenever the
stream ends or breaks, with bounded exponential backoff and jitter on errors, and a relist plus
`Inventory.replace` when the server says the resourceVersion is gone (410).

Responses are read with `_preload_content=False` and parsed line by line with `json`: no
kubernetes model is built on this path (kubernetes_asyncio's `Watch` would deserialise every
event into a model), and no full object outlives its event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from kubernetes_asyncio import client

from aiinfn_hub.inventory import Inventory

log = logging.getLogger(__name__)

# Pods that cannot occupy anything (unbound or finished) are filtered by the API server; a pod
# that stops matching arrives as DELETED, which is what the inventory wants.
POD_FIELD_SELECTOR = "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed"
BOOKMARK = "BOOKMARK"
ERROR = "ERROR"


class ResourceExpired(Exception):
    """The resourceVersion to resume from is no longer served (410 Gone): relist."""


class WatchError(Exception):
    """The API server refused a list or watch, or sent an ERROR event other than 410."""

    def __init__(self, status: Any, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


def parse_event(line: bytes | str) -> tuple[str, dict[str, Any]]:
    """(type, object) of one watch line; ERROR events raise, 410 as ResourceExpired."""
    event = json.loads(line)
    event_type = event.get("type")
    obj = event.get("object")
    if not isinstance(event_type, str) or not isinstance(obj, dict):
        raise WatchError(None, "malformed watch event")
    if event_type == ERROR:
        code = obj.get("code")
        message = str(obj.get("message") or obj.get("reason") or "")[:300]
        if code == 410:
            raise ResourceExpired(message)
        raise WatchError(code, message)
    return event_type, obj


def resource_version(obj: Mapping[str, Any]) -> str | None:
    """metadata.resourceVersion of an object or list, if any."""
    meta = obj.get("metadata")
    value = meta.get("resourceVersion") if isinstance(meta, dict) else None
    return value if isinstance(value, str) and value else None


def backoff_delay(
    attempt: int, base: float = 0.5, cap: float = 30.0, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before retry number `attempt` (1, 2, ...): exponential, capped, with
    jitter over its upper half so a restarted API server is not hit by every hub at once."""
    ceiling = min(cap, base * 2 ** min(max(attempt, 1) - 1, 32))
    return ceiling / 2 + rand() * ceiling / 2


async def _checked(response: aiohttp.ClientResponse) -> aiohttp.ClientResponse:
    """With _preload_content=False kubernetes_asyncio does not raise on errors: do it here."""
    if response.status == 200:
        return response
    try:
        body = await response.text()
    finally:
        response.close()
    try:
        message = str(json.loads(body).get("message", ""))[:300]
    except (ValueError, AttributeError):
        message = body[:300]
    if response.status == 410:
        raise ResourceExpired(message)
    raise WatchError(response.status, message)


class _Kind:
    """One watched collection: how to list it and where its events and relists go."""

    def __init__(
        self,
        name: str,
        lister: Callable[..., Awaitable[Any]],
        apply: Callable[[str, Any], bool],
        slim: Callable[[list[dict]], dict[str, Any]],
        replace: Callable[[dict[str, Any]], None],
        field_selector: str | None,
    ) -> None:
        self.name = name
        self.lister = lister
        self.apply = apply
        self.slim = slim
        self.replace = replace
        self.field_selector = field_selector
        self.resource_version: str | None = None
        self.attempt = 0
        self.synced = asyncio.Event()


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
        self.page_size = page_size
        self.watch_timeout = watch_timeout
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.log = logger or log
        self.synced = asyncio.Event()
        self.stats = {"events": 0, "bookmarks": 0, "relists": 0, "errors": 0, "expired": 0}
        core = client.CoreV1Api(api_client)
        self._kinds = (
            _Kind(
                "nodes",
                core.list_node,
                inventory.apply_node,
                inventory.slim_nodes,
                lambda records: inventory.replace(nodes=records),
                None,
            ),
            _Kind(
                "pods",
                core.list_pod_for_all_namespaces,
                inventory.apply_pod,
                inventory.slim_pods,
                lambda records: inventory.replace(pods=records),
                pod_field_selector,
            ),
        )
        self._tasks: list[asyncio.Task] = []

    def resource_versions(self) -> dict[str, str | None]:
        """The resourceVersion each watch resumes from (None: a relist is due)."""
        return {kind.name: kind.resource_version for kind in self._kinds}

    async def start(self, wait: bool = True) -> None:
        """Start watching; with wait, return once nodes and pods have both been listed."""
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._run(kind), name=f"inventory-{kind.name}")
                for kind in self._kinds
            ]
        if wait:
            await self.synced.wait()

    async def stop(self) -> None:
        """Cancel the watches and wait until their connections are closed."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for kind in self._kinds:
            kind.resource_version = None
            kind.synced.clear()
        self.synced.clear()

    async def _run(self, kind: _Kind) -> None:
        while True:
            try:
                if kind.resource_version is None:
                    await self._relist(kind)
                if await self._watch(kind):
                    kind.attempt = 0
                    continue  # the server ended a healthy stream: resume at once
                kind.attempt += 1  # ended early without a line: do not spin on a failing server
            except ResourceExpired as error:
                self.stats["expired"] += 1
                self.log.info(
                    "inventory: %s resourceVersion %s expired (%s); relisting",
                    kind.name,
                    kind.resource_version,
                    error,
                )
                kind.resource_version = None
                kind.attempt += 1
                if kind.attempt == 1:
                    continue  # the first relist is immediate
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError, WatchError) as error:
                self.stats["errors"] += 1
                kind.attempt += 1
                self.log.warning(
                    "inventory: %s watch failed (attempt %d): %s: %s",
                    kind.name,
                    kind.attempt,
                    type(error).__name__,
                    error,
                )
            except Exception:
                # A bug or a surprise: the counts may be off, so start again from a list.
                self.stats["errors"] += 1
                kind.attempt += 1
                kind.resource_version = None
                self.log.exception("inventory: %s watch crashed; relisting", kind.name)
            await asyncio.sleep(backoff_delay(kind.attempt, self.backoff_base, self.backoff_cap))

    async def _relist(self, kind: _Kind) -> None:
        """Page through the collection, then replace that kind in the inventory at once."""
        records: dict[str, Any] = {}
        token = None
        version = None
        timeout = aiohttp.ClientTimeout(sock_connect=10, sock_read=60)
        while True:
            response = await _checked(
                await kind.lister(
                    limit=self.page_size,
                    _continue=token,
                    field_selector=kind.field_selector,
                    _preload_content=False,
                    _request_timeout=timeout,
                )
            )
            try:
                body = json.loads(await response.read())
            finally:
                response.release()
            # Slim each page as it comes, so 20,000 full pods never sit in memory at once.
            records.update(kind.slim(body.get("items") or []))
            meta = body.get("metadata") or {}
            version = meta.get("resourceVersion") or version
            token = meta.get("continue")
            if not token:
                break
        if not version:
            raise WatchError(None, f"list of {kind.name} came without a resourceVersion")
        kind.replace(records)
        kind.resource_version = version
        kind.attempt = 0
        self.stats["relists"] += 1
        self.log.info(
            "inventory: listed %s at resourceVersion %s (%d nodes, %d pods hold accelerators)",
            kind.name,
            version,
            self.inventory.node_count,
            self.inventory.pod_count,
        )
        if not kind.synced.is_set():
            kind.synced.set()
            if all(k.synced.is_set() for k in self._kinds):
                self.synced.set()

    async def _watch(self, kind: _Kind) -> bool:
        """Follow one watch stream until it ends; True if it was healthy: it delivered a line
        or lasted half its timeout (a quiet cluster sends nothing for minutes)."""
        started = time.monotonic()
        timeout = aiohttp.ClientTimeout(sock_connect=10, sock_read=self.watch_timeout + 60)
        response = await _checked(
            await kind.lister(
                watch=True,
                resource_version=kind.resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=self.watch_timeout,
                field_selector=kind.field_selector,
                _preload_content=False,
                _request_timeout=timeout,
            )
        )
        delivered = False
        try:
            async for line in response.content:
                if not line.strip():
                    continue
                event_type, obj = parse_event(line)
                if event_type == BOOKMARK:
                    self.stats["bookmarks"] += 1
                else:
                    kind.apply(event_type, obj)
                    self.stats["events"] += 1
                # Only after the event is applied: a break before this replays it.
                kind.resource_version = resource_version(obj) or kind.resource_version
                if not delivered:
                    delivered = True
                    kind.attempt = 0
        finally:
            response.close()
        return delivered or time.monotonic() - started >= self.watch_timeout / 2
