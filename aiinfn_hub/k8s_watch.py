"""List-then-watch of one Kubernetes collection: the one watch loop every watcher uses.

A paginated LIST, then a WATCH from the list's resourceVersion with bookmarks, resumed from the
last resourceVersion seen whenever the stream ends or breaks, with the backoff of k8s.py on
errors, and a relist when the server says the resourceVersion is gone (410). The owner gets the
list through `on_relist` and every other change through `on_event`, as plain dicts.

Responses are read with `_preload_content=False` and parsed line by line with `json`: no
kubernetes model is built on this path (kubernetes_asyncio's `Watch` would deserialise every
event into a model), and no full object outlives its event.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import aiohttp

from . import k8s

log = logging.getLogger(__name__)

BOOKMARK = "BOOKMARK"
ERROR = "ERROR"

Lister = Callable[..., Awaitable[Any]]
"""A kubernetes_asyncio list method, e.g. `CoreV1Api.list_pod_for_all_namespaces` (it watches
with `watch=True`)."""


def parse_event(line: bytes | str) -> tuple[str, dict[str, Any]]:
    """(type, object) of one watch line; an ERROR event raises as a refused call would
    (`k8s.ResourceExpired` for 410)."""
    event = json.loads(line)
    event_type = event.get("type")
    obj = event.get("object")
    if not isinstance(event_type, str) or not isinstance(obj, dict):
        raise k8s.ApiError(None, "malformed watch event")
    if event_type == ERROR:
        message = str(obj.get("message") or obj.get("reason") or "")
        code = obj.get("code")
        raise k8s.api_error(code if isinstance(code, int) else None, message, obj.get("reason"))
    return event_type, obj


def resource_version(obj: Mapping[str, Any]) -> str | None:
    """metadata.resourceVersion of an object or list, if any."""
    meta = obj.get("metadata")
    value = meta.get("resourceVersion") if isinstance(meta, dict) else None
    return value if isinstance(value, str) and value else None


async def _called(callback: Callable[..., Any], *args: Any) -> None:
    """Call a callback that may be a plain function or a coroutine function."""
    result = callback(*args)
    if inspect.isawaitable(result):
        await result


class ListWatch:
    """Keeps one collection followed: `on_relist(kept, resource_version)` after every full list
    (`kept`: what `keep` returned for each page, concatenated; default the items themselves),
    `on_event(type, obj)` for each ADDED, MODIFIED or DELETED after it.

    Observable: `resource_version` (where the watch resumes; None: a relist is due),
    `last_event_at` (time.time() of the last line, bookmarks included), `stats()` (events,
    bookmarks, relists, errors, expired) and `synced` (set once the first list is handed over).
    """

    def __init__(
        self,
        name: str,
        lister: Lister,
        on_relist: Callable[[list[Any], str], Any],
        on_event: Callable[[str, dict[str, Any]], Any],
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        keep: Callable[[list[dict[str, Any]]], Iterable[Any]] | None = None,
        page_size: int = 500,
        watch_timeout: int = 300,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self.name = name
        self.lister = lister
        self.on_relist = on_relist
        self.on_event = on_event
        self.selectors = {"label_selector": label_selector, "field_selector": field_selector}
        self.keep = keep
        self.page_size = page_size
        self.watch_timeout = watch_timeout
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.log = logger or log
        self.resource_version: str | None = None
        self.last_event_at: float | None = None
        self.attempt = 0
        self.counts = {"events": 0, "bookmarks": 0, "relists": 0, "errors": 0, "expired": 0}
        self.synced = asyncio.Event()
        self._task: asyncio.Task | None = None

    def stats(self) -> dict[str, int]:
        """Events, bookmarks, relists, errors and 410s since this watch was made."""
        return dict(self.counts)

    def start(self) -> None:
        """Follow the collection in a task of its own (once)."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"watch-{self.name}")

    async def stop(self) -> None:
        """Cancel the task, wait until its connection is closed; a later start relists."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.resource_version = None
        self.synced.clear()

    async def run(self) -> None:
        """List, then watch, until cancelled."""
        while True:
            try:
                if self.resource_version is None:
                    await self._relist()
                if await self._watch():
                    self.attempt = 0
                    continue  # the server ended a healthy stream: resume at once
                self.attempt += 1  # ended early without a line: do not spin on a failing server
            except k8s.ResourceExpired as error:
                if self._expired(error):
                    continue  # the first relist is immediate
            except (*k8s.TRANSIENT, ValueError, k8s.ApiError) as error:
                self._failed(error)
            except Exception:
                # A bug or a surprise: what the owner holds may be off, so start from a list.
                self.counts["errors"] += 1
                self.attempt += 1
                self.resource_version = None
                self.log.exception("%s: watch crashed; relisting", self.name)
            await asyncio.sleep(self._delay())

    def _delay(self) -> float:
        return k8s.backoff_delay(self.attempt, self.backoff_base, self.backoff_cap)

    def _expired(self, error: k8s.ResourceExpired) -> bool:
        """Forget the resourceVersion; True if the relist may start at once."""
        self.counts["expired"] += 1
        self.log.info(
            "%s: resourceVersion %s expired (%s); relisting",
            self.name,
            self.resource_version,
            error,
        )
        self.resource_version = None
        self.attempt += 1
        return self.attempt == 1

    def _failed(self, error: Exception) -> None:
        self.counts["errors"] += 1
        self.attempt += 1
        self.log.warning(
            "%s: watch failed (attempt %d): %s: %s",
            self.name,
            self.attempt,
            type(error).__name__,
            error,
        )

    async def _relist(self) -> None:
        """Page through the collection, then hand it over at once."""
        kept: list[Any] = []
        token = None
        version = None
        timeout = aiohttp.ClientTimeout(sock_connect=10, sock_read=60)
        while True:
            body = await k8s.call_json(
                self.lister(
                    limit=self.page_size,
                    _continue=token,
                    **self.selectors,
                    _preload_content=False,
                    _request_timeout=timeout,
                )
            )
            items = body.get("items") or []
            # Reduce each page as it comes, so 20,000 full pods never sit in memory at once.
            kept.extend(self.keep(items) if self.keep else items)
            meta = body.get("metadata") or {}
            version = meta.get("resourceVersion") or version
            token = meta.get("continue")
            if not token:
                break
        if not version:
            raise k8s.ApiError(None, f"list of {self.name} came without a resourceVersion")
        await _called(self.on_relist, kept, version)
        self.resource_version = version
        self.attempt = 0
        self.counts["relists"] += 1
        self.synced.set()

    async def _watch(self) -> bool:
        """Follow one watch stream until it ends; True if it was healthy: it delivered a line
        or lasted half its timeout (a quiet cluster sends nothing for minutes)."""
        started = time.monotonic()
        timeout = aiohttp.ClientTimeout(sock_connect=10, sock_read=self.watch_timeout + 60)
        response = await k8s.call_raw(
            self.lister(
                watch=True,
                resource_version=self.resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=self.watch_timeout,
                **self.selectors,
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
                    self.counts["bookmarks"] += 1
                else:
                    await _called(self.on_event, event_type, obj)
                    self.counts["events"] += 1
                # Only after the event is handled: a break before this replays it.
                self.resource_version = resource_version(obj) or self.resource_version
                self.last_event_at = time.time()
                if not delivered:
                    delivered = True
                    self.attempt = 0
        finally:
            response.close()
        return delivered or time.monotonic() - started >= self.watch_timeout / 2
