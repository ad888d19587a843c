"""The benchmark's own dev cluster, and filling it with pods (through the real API server)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiinfn_dev.devcluster import processes
from aiinfn_dev.devcluster.cluster import DevCluster
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from measuring import say

from .settings import (
    BATCH_NAMESPACES,
    BENCH_LABEL,
    CLUSTER_NAME,
    CONCURRENCY,
    NOTEBOOK_NAMESPACES,
    PAGE_SIZE,
)


def fresh_cluster(topology_name: str) -> tuple[DevCluster, int]:
    """The cluster "bench" on a free port, stopped first if an earlier run left it.

    The pod runner stays off: it would start a real JupyterLab for every bound pod whose image
    is a catalog environment (load average above 50, 5 pods created per second instead of 360).
    This benchmark measures the spawn form; kwok playing the pods is all it needs."""
    port = processes.free_port()
    cluster = DevCluster(
        name=CLUSTER_NAME,
        port=port,
        topology_name=topology_name,
        log=lambda line: say(f"  devcluster: {line}"),
        pod_runner=False,
    )
    if cluster.status().state != "stopped":
        say(f"cluster {CLUSTER_NAME!r} left from an earlier run: stopping it")
        cluster.down()
    return cluster, port


async def make_namespaces(core: client.CoreV1Api) -> None:
    for namespace in NOTEBOOK_NAMESPACES + BATCH_NAMESPACES:
        try:
            await core.create_namespace(
                {
                    "metadata": {
                        "name": namespace,
                        "labels": {
                            BENCH_LABEL: "true",
                            "pod-security.kubernetes.io/enforce": "restricted",
                        },
                    }
                }
            )
        except ApiException as error:
            if error.status != 409:
                raise
    deadline = time.monotonic() + 120
    for namespace in NOTEBOOK_NAMESPACES + BATCH_NAMESPACES:
        while True:  # pods are refused until the controller-manager made the default account
            accounts = await core.list_namespaced_service_account(namespace)
            if any(a.metadata.name == "default" for a in accounts.items):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"no default ServiceAccount in {namespace} after 120 s")
            await asyncio.sleep(0.2)


async def create_pod(core: client.CoreV1Api, pod: dict[str, Any]) -> None:
    """Create one pod; retry 429/5xx and connection errors with backoff, fail on anything else."""
    name = pod["metadata"]["name"]
    for attempt in range(8):
        try:
            response = await core.create_namespaced_pod(
                pod["metadata"]["namespace"], pod, _preload_content=False
            )
        except (TimeoutError, aiohttp.ClientError) as error:
            status, body = None, str(error)
        else:
            try:
                status, body = response.status, (await response.read())[:300]
            finally:
                response.release()
            if status in (201, 409):  # 409: left from an interrupted attempt
                return
            if status not in (429, 500, 503, 504):
                raise SystemExit(f"creating pod {name} failed ({status}): {body!r}")
        await asyncio.sleep(min(5.0, 0.2 * 2**attempt))
    raise SystemExit(f"creating pod {name} kept failing: {status} {body!r}")


async def create_pods(core: client.CoreV1Api, pods: list[dict[str, Any]]) -> float:
    """Create every pod with CONCURRENCY requests in flight; retry 429/5xx; return seconds."""
    queue = iter(pods)
    done = 0
    started = time.monotonic()

    async def worker() -> None:
        nonlocal done
        for pod in queue:  # one shared iterator: each pod is taken by exactly one worker
            await create_pod(core, pod)
            done += 1
            if done % 2500 == 0:
                rate = done / (time.monotonic() - started)
                say(f"  created {done}/{len(pods)} pods ({rate:.0f}/s)")

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return time.monotonic() - started


async def wait_running(core: client.CoreV1Api, limit: float) -> tuple[float, bool]:
    """Wait until no bench pod is anything but Running (kwok plays them); (seconds, all running)."""
    started = time.monotonic()
    while True:
        response = await core.list_pod_for_all_namespaces(
            label_selector=BENCH_LABEL,
            field_selector="status.phase!=Running",
            limit=1,
            _preload_content=False,
        )
        try:
            body = json.loads(await response.read())
        finally:
            response.release()
        if not body.get("items"):
            return time.monotonic() - started, True
        if time.monotonic() - started > limit:
            return time.monotonic() - started, False
        await asyncio.sleep(2.0)


async def raw_pages(lister: Callable[..., Any], field_selector: str | None) -> list[bytes]:
    """The list responses as the watcher reads them (pages of PAGE_SIZE, raw JSON bytes)."""
    pages, token = [], None
    while True:
        response = await lister(
            limit=PAGE_SIZE, _continue=token, field_selector=field_selector, _preload_content=False
        )
        try:
            data = await response.read()
        finally:
            response.release()
        pages.append(data)
        token = (json.loads(data).get("metadata") or {}).get("continue")
        if not token:
            return pages
