"""One spawn through a hub's REST API, measured: wall time and the API server's counters."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio import client

from tests.hub import Hub

from . import metrics
from .hubs import NAMESPACE

POLL_SECONDS = 0.05
SETTLE_SECONDS = 1.0


@dataclass
class Sample:
    variant: str
    wall_s: float
    spawn: dict[metrics.Key, float]  # counter deltas over the spawn window
    idle: dict[metrics.Key, float] = field(default_factory=dict)  # over an idle window as long
    pod: dict | None = None  # the pod as created, when asked for (the warm-up)

    def net(self) -> dict[metrics.Key, float]:
        return metrics.minus(self.spawn, self.idle)


async def call(hub: Hub, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return await asyncio.to_thread(hub.request, method, path, body)


async def _ready(hub: Hub, user: str) -> bool:
    status, model = await call(hub, "GET", f"/users/{user}")
    server = (model.get("servers") or {}).get("") if status == 200 else None
    if server is None and status == 200 and not model.get("pending"):
        raise RuntimeError(f"the spawn of {user} failed: {hub.log()[-2000:]}")
    return bool(server and server.get("ready"))


async def spawn(hub: Hub, user: str, limit: float = 120.0) -> float:
    """POST the default server with an empty body (the default options); seconds until the hub
    says it is ready: the spawner's start() returned (KubeSpawner saw the pod Running) and the
    hub reached the server's URL."""
    started = time.monotonic()
    status, answer = await call(hub, "POST", f"/users/{user}/server", {})
    if status not in (201, 202):
        raise RuntimeError(f"spawn of {user}: {status} {answer}")
    while status != 201 and not await _ready(hub, user):
        if time.monotonic() - started > limit:
            raise RuntimeError(f"spawn of {user} not ready after {limit} s")
        await asyncio.sleep(POLL_SECONDS)
    return time.monotonic() - started


async def read_pod(api: client.ApiClient, user: str) -> dict | None:
    """The pod as raw JSON (camelCase, as the API server stores it), None if there is none."""
    response = await client.CoreV1Api(api).read_namespaced_pod(
        f"jupyter-{user}", NAMESPACE, _preload_content=False
    )
    try:
        body = json.loads(await response.read())
    finally:
        response.release()
    if response.status == 404:
        return None
    if response.status != 200:
        raise RuntimeError(f"reading the pod of {user}: {response.status} {body}")
    return body


async def stop(hub: Hub, api: client.ApiClient, user: str, limit: float = 120.0) -> None:
    """Stop the server and wait until its pod is gone (outside any measured window)."""
    status, answer = await call(hub, "DELETE", f"/users/{user}/server")
    if status not in (202, 204):
        raise RuntimeError(f"stopping {user}: {status} {answer}")
    deadline = time.monotonic() + limit
    while True:
        status, model = await call(hub, "GET", f"/users/{user}")
        servers = (model.get("servers") or {}).values()
        active = model.get("pending") or any(s.get("ready") or s.get("pending") for s in servers)
        if not active and await read_pod(api, user) is None:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server of {user} did not stop in {limit} s")
        await asyncio.sleep(0.2)


async def measured(
    variant: str, hub: Hub, api: client.ApiClient, user: str, keep_pod: bool = False
) -> Sample:
    """Spawn, then stay idle as long as the spawn took (the pod running), then stop (unless
    keep_pod: then the pod is kept in the sample and left running); the counters are read
    before and after the spawn and after the idle window."""
    await asyncio.sleep(SETTLE_SECONDS)
    before = await metrics.read(api)
    wall = await spawn(hub, user)
    after = await metrics.read(api)
    await asyncio.sleep(wall)
    idle_end = await metrics.read(api)
    sample = Sample(variant, wall, metrics.delta(after, before), metrics.delta(idle_end, after))
    pod = await read_pod(api, user)
    if not pod or pod["status"].get("phase") != "Running":
        raise RuntimeError(
            f"the pod of {user} is not Running after the spawn: {pod and pod['status']}"
        )
    if keep_pod:
        sample.pod = pod
    else:
        await stop(hub, api, user)
    return sample
