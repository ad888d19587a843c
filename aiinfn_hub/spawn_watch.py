"""The start watchdog: a start is given up as soon as its pod cannot start (the scheduler keeps
refusing it, or a container keeps crashing), and what the scheduler does is told to progress().

KubeSpawner's start() only wraps its _start in the future its progress() follows; the watchdog
runs beside it. A start given up deletes its pod before it fails (docs/spawn.md, "How it works").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Any

from kubernetes_asyncio.client.rest import ApiException
from kubespawner import KubeSpawner

from . import k8s, podfailure, spawn_crash, spawn_progress
from .errors import UserError, to_http_error

WATCH_SECONDS = 0.5


class StartWatch:
    """The watchdog and the progress stream of one AiInfnSpawner (`spawner`): it reads the pod
    and its events from the spawner's reflectors, its fail_fast_seconds and crash_restarts, and
    appends scheduling notes to the spawner's progress messages (`_progress`)."""

    def __init__(self, spawner: KubeSpawner) -> None:
        self.spawner = spawner
        # The node last nominated for the pod and the batch jobs stopped there (None: unread).
        self.victims: tuple[str, spawn_progress.Victims | None] | None = None

    async def start(self, start: asyncio.Future) -> Any:
        """Await KubeSpawner's `start`, abandoned once the watchdog raises (see watch)."""
        watchdog = asyncio.ensure_future(self.watch())
        try:
            await asyncio.wait({start, watchdog}, return_when=asyncio.FIRST_COMPLETED)
            if watchdog.done() and not watchdog.cancelled() and watchdog.exception():
                start.cancel()
                await self.abandon(start)
                raise watchdog.exception()
            return await start
        finally:
            watchdog.cancel()
            start.cancel()  # when this start is cancelled itself (the server deleted meanwhile)

    async def abandon(self, start: asyncio.Future) -> None:
        """Delete the pod of a start given up, and wait until it is gone, before the failure is
        raised. JupyterHub stops counting the spawn as pending the moment start() fails, while
        it deletes the pod; a REST call whose slow_spawn_timeout ended then was answered 201
        (ready) for a server that was failing. Until this returns the spawn is pending (202)."""
        await asyncio.wait({start})
        try:
            await self.spawner.stop(now=True)
        except Exception:
            # JupyterHub's own clean-up after the failure deletes the pod again.
            self.spawner.log.exception(
                "Could not delete the pod of %s after giving up", self.spawner._log_name
            )

    async def watch(self) -> None:
        """Raise once the pod cannot start: FailedScheduling has been its latest word for
        fail_fast_seconds (not counting while preempted pods make room for it), or a container
        has failed again after crash_restarts restarts. Tells progress() what it sees."""
        spawner = self.spawner
        first_seen = None
        self.victims = None
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            crash = self.crash()
            if crash is not None:
                error = await spawn_crash.crash_error(spawner, crash)
                spawner.log.warning(
                    "Giving up spawn of %s: %s", spawner._log_name, error.log_detail
                )
                raise to_http_error(error)
            events = spawner.events if spawner.event_reflector else []
            latest = events[-1] if events else None
            await self.note_scheduling(latest)
            if latest is None or latest.get("reason") != "FailedScheduling" or self.nominated():
                first_seen = None
                continue
            first_seen = first_seen or time.monotonic()
            if time.monotonic() - first_seen >= spawner.fail_fast_seconds:
                error = UserError(
                    f"no node can host this server now: {latest.get('message', '')}",
                    reason="capacity",
                    status=503,
                )
                spawner.log.warning(
                    "Giving up spawn of %s: %s", spawner._log_name, error.log_detail
                )
                raise to_http_error(error)

    def pod(self) -> dict | None:
        spawner = self.spawner
        reflector = spawner.pod_reflector
        return reflector.pods.get(f"{spawner.namespace}/{spawner.pod_name}") if reflector else None

    def crash(self) -> podfailure.Crash | None:
        pod = self.pod()
        if pod is None or pod["metadata"].get("deletionTimestamp"):
            return None
        return podfailure.crashed(pod, self.spawner.crash_restarts)

    def nominated(self) -> bool:
        """Whether the scheduler has preempted pods for this one and waits for them to stop
        (their grace period, 20 s for our jobs, may well exceed fail_fast_seconds)."""
        pod = self.pod()
        return bool(pod and (pod.get("status") or {}).get("nominatedNodeName"))

    async def note_scheduling(self, latest: dict | None) -> None:
        """Add a progress message when the scheduling state changes: a new FailedScheduling
        reason, a node nominated (batch pods preempted there), the pod placed on its node."""
        pod = self.pod() or {}
        node = (pod.get("spec") or {}).get("nodeName")
        nominated = (pod.get("status") or {}).get("nominatedNodeName")
        if node:
            note = spawn_progress.starting(node)
        elif nominated:
            if self.victims is None or self.victims[0] != nominated:
                self.victims = (nominated, await self.victims_on(nominated, pod))
            note = spawn_progress.preempting(
                nominated, self.batch_units_on(nominated), self.victims[1]
            )
        elif latest is not None and latest.get("reason") == "FailedScheduling":
            note = spawn_progress.waiting(latest.get("message") or "")
        else:
            return
        notes = self.spawner._progress
        if not any(shown["message"] == note["message"] for shown in notes[-3:]):
            notes.append(note)

    async def victims_on(self, node: str, pod: dict) -> spawn_progress.Victims | None:
        """The batch jobs stopped on `node` for this server's `pod`, read once per nominated node
        from the pods there in the spawner's namespace (the job service's too), or None if they
        cannot be read (the message then counts the units the inventory shows)."""
        spawner = self.spawner
        listing = k8s.call_json(
            spawner.api.list_namespaced_pod(
                spawner.namespace,
                field_selector=f"spec.nodeName={node}",
                _preload_content=False,
            )
        )
        try:
            pods = await asyncio.wait_for(listing, spawner.k8s_api_request_timeout)
        except ApiException as error:
            spawner.log.warning(
                "Could not list the pods on %s for %s: %s %s",
                node,
                spawner._log_name,
                error.status,
                error.reason,
            )
            return None
        except k8s.TRANSIENT as error:
            spawner.log.warning(
                "Could not list the pods on %s for %s: %r", node, spawner._log_name, error
            )
            return None
        priority = (pod.get("spec") or {}).get("priority")
        return spawn_progress.batch_victims(pods.get("items") or (), priority, spawner.user.name)

    def batch_units_on(self, node: str) -> int:
        """Accelerator units batch pods hold on `node` now, as the shared inventory counts them."""
        platform = self.spawner._shared
        if platform is None:
            return 0
        per_node = platform.inventory.per_node(self.spawner._policy().groups)
        return sum(counts.batch for (_, name), counts in per_node.items() if name == node)

    async def progress(
        self, upstream: AsyncGenerator[spawn_progress.Event, None]
    ) -> AsyncGenerator[spawn_progress.Event, None]:
        """The spawner's messages (spawn_progress, in order) merged with KubeSpawner's pod
        events (`upstream`) as both come; the bar never moves back."""
        pending = asyncio.ensure_future(anext(upstream))
        sent, shown = 0, 0
        try:
            while True:
                while sent < len(self.spawner._progress):
                    note = spawn_progress.merged(self.spawner._progress[sent], shown)
                    sent, shown = sent + 1, note["progress"]
                    yield note
                await asyncio.wait({pending}, timeout=WATCH_SECONDS)
                if not pending.done():
                    continue
                try:
                    event = pending.result()
                except StopAsyncIteration:
                    break
                shown = max(shown, event.get("progress", shown))
                yield event
                pending = asyncio.ensure_future(anext(upstream))
            for note in self.spawner._progress[sent:]:
                yield spawn_progress.merged(note, shown)
        finally:
            pending.cancel()
            await asyncio.wait({pending})
            await upstream.aclose()
