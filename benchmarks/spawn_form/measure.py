"""One scale, end to end: a fresh cluster filled with pods, the watcher synced, renders of ours
and of the baseline while the cluster runs, then the measurements that need no cluster."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import time
from typing import Any

from aiinfn_dev.devcluster.cluster import DevCluster
from kubernetes_asyncio import client
from measuring import percentile, say

from aiinfn_hub import k8s
from aiinfn_hub.catalog import Catalog
from aiinfn_hub.inventory import Inventory
from aiinfn_hub.inventory_watch import POD_FIELD_SELECTOR, InventoryWatcher

from .cluster import create_pods, fresh_cluster, make_namespaces, raw_pages, wait_running
from .offline import offline_measurements
from .pods import plan_pods, pod_mix
from .renders import IN_RENDER, CallCounter, FormPath, render_baseline, render_ours, stage_breakdown
from .settings import USER_GROUPS, Scale


async def populate(
    core: client.CoreV1Api, scale: Scale, catalog: Catalog, result: dict[str, Any]
) -> None:
    """Create the scale's pods and wait until kwok marks them Running."""
    pods = plan_pods(scale.topology, catalog, scale.pods)
    result["mix"] = pod_mix(pods, catalog)
    result["accelerator_pods"] = sum(
        n for k, n in result["mix"].items() if not k.startswith("cpu ")
    )
    await make_namespaces(core)
    result["create_s"] = await create_pods(core, pods)
    say(
        f"{scale.title}: created {len(pods)} pods in {result['create_s']:.1f} s "
        f"({len(pods) / result['create_s']:.0f}/s), "
        f"{result['accelerator_pods']} with accelerators"
    )
    del pods
    running_s, all_running = await wait_running(core, limit=300)
    result["running_wait_s"], result["all_running"] = running_s, all_running
    say(
        f"{scale.title}: {'all' if all_running else 'NOT all'} pods Running after "
        f"{running_s:.0f} s more"
    )


async def sync_watcher(
    api: client.ApiClient,
    inventory: Inventory,
    counter: CallCounter,
    scale: Scale,
    result: dict[str, Any],
) -> InventoryWatcher:
    """Start the watcher and wait until the inventory holds every accelerator pod."""
    watcher = InventoryWatcher(api, inventory)
    before = counter.state()
    sync_started = time.monotonic()
    await watcher.start()
    while inventory.pod_count != result["accelerator_pods"]:
        if time.monotonic() - sync_started > 120:
            raise SystemExit(
                f"inventory holds {inventory.pod_count} pods, expected {result['accelerator_pods']}"
            )
        await asyncio.sleep(0.1)
    result["watch_sync_s"] = time.monotonic() - sync_started
    result["watch_sync_requests"] = counter.state()[1] - before[1]
    say(
        f"{scale.title}: watcher synced in {result['watch_sync_s']:.1f} s "
        f"({result['watch_sync_requests']} requests); {inventory.node_count} nodes, "
        f"{inventory.pod_count} accelerator pods held"
    )
    return watcher


async def time_ours(
    path: FormPath, inventory: Inventory, counter: CallCounter, scale: Scale, result: dict[str, Any]
) -> None:
    """Renders of ours with the watcher live; wall and thread CPU time, API calls made."""
    for _ in range(20):
        render_ours(path, inventory)  # warm-up
    gc.collect()
    result["load_before_renders"] = os.getloadavg()[0]
    before = counter.state()
    samples, cpu = [], []
    for i in range(scale.renders):
        t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        render_ours(path, inventory)
        c1, t1 = time.thread_time_ns(), time.perf_counter_ns()
        samples.append((t1 - t0) / 1e6)
        cpu.append((c1 - c0) / 1e6)
        if i % 50 == 49:
            await asyncio.sleep(0)  # let the watcher apply what arrived, as in a hub
    after = counter.state()
    result["ours_ms"] = samples
    result["ours_cpu_ms"] = cpu
    result["ours_render_calls"] = after[2] - before[2]
    result["ours_render_requests"] = after[3] - before[3]
    result["ours_all_requests_during_loop"] = after[1] - before[1]
    say(
        f"{scale.title}: ours {scale.renders} renders, p50 {percentile(samples, 50):.3f} ms, "
        f"p95 {percentile(samples, 95):.3f} ms; render-path API calls: "
        f"{result['ours_render_calls']}"
    )


async def time_baseline(
    path: FormPath,
    inventory: Inventory,
    core: client.CoreV1Api,
    counter: CallCounter,
    scale: Scale,
    result: dict[str, Any],
) -> None:
    """Renders of the baseline; the first is compared with ours (same numbers, same page)."""
    gc.collect()
    before = counter.state()
    samples = []
    for i in range(scale.baseline_renders):
        t0 = time.perf_counter_ns()
        html_base, availability_base = await render_baseline(path, core)
        samples.append((time.perf_counter_ns() - t0) / 1e6)
        if i == 0:
            html_ours, availability_ours = render_ours(path, inventory)
            result["same_numbers"] = availability_ours == availability_base
            result["same_html"] = html_ours == html_base
            result["form_bytes"] = len(html_ours)
            if not result["same_numbers"]:
                say(
                    f"  WARNING: counts differ: ours {availability_ours} "
                    f"baseline {availability_base}"
                )
    after = counter.state()
    result["baseline_ms"] = samples
    result["baseline_calls_per_render"] = (after[2] - before[2]) / scale.baseline_renders
    say(
        f"{scale.title}: baseline {scale.baseline_renders} renders, p50 "
        f"{percentile(samples, 50):.1f} ms, p95 {percentile(samples, 95):.1f} ms"
    )


async def raw_lists_ms(core: client.CoreV1Api) -> float:
    """Where the baseline's time goes: the same two lists as raw JSON, no models (median of 3)."""
    raw = []
    for _ in range(3):
        t0 = time.perf_counter_ns()
        for lister in (core.list_node, core.list_pod_for_all_namespaces):
            response = await lister(_preload_content=False)
            try:
                json.loads(await response.read())
            finally:
                response.release()
        raw.append((time.perf_counter_ns() - t0) / 1e6)
    return statistics.median(raw)


async def measure_live(
    cluster: DevCluster, scale: Scale, catalog: Catalog, result: dict[str, Any]
) -> tuple[list[bytes], list[bytes]]:
    """Everything measured while the cluster runs; returns its node and pod list pages."""
    api = await k8s.api_client(str(cluster.layout.admin_kubeconfig))
    async with api:
        counter = CallCounter(api)
        core = client.CoreV1Api(api)
        await populate(core, scale, catalog, result)
        inventory = Inventory(catalog.accelerators)
        watcher = await sync_watcher(api, inventory, counter, scale, result)
        path = FormPath(catalog)
        try:
            token = IN_RENDER.set(True)
            try:
                await time_ours(path, inventory, counter, scale, result)
                result["ours_stages_ms"] = stage_breakdown(path, inventory, min(500, scale.renders))
                await time_baseline(path, inventory, core, counter, scale, result)
            finally:
                IN_RENDER.reset(token)
            result["baseline_raw_lists_ms"] = await raw_lists_ms(core)
            result["watcher_stats"] = dict(watcher.stats)
        finally:
            await watcher.stop()
        result["snapshot_matches_recount"] = inventory.snapshot(USER_GROUPS) == inventory.recount(
            USER_GROUPS
        )
        node_pages = await raw_pages(core.list_node, None)
        pod_pages = await raw_pages(core.list_pod_for_all_namespaces, POD_FIELD_SELECTOR)
    return node_pages, pod_pages


async def measure_scale(scale: Scale, catalog: Catalog) -> dict[str, Any]:
    result: dict[str, Any] = {
        "scale": scale.key,
        "title": scale.title,
        "topology": scale.topology,
        "pods": scale.pods,
    }
    cluster, port = fresh_cluster(scale.topology)
    started = time.monotonic()
    try:
        cluster.up(timeout=600)
        result["cluster_up_s"] = time.monotonic() - started
        say(f"{scale.title}: cluster up on 127.0.0.1:{port} in {result['cluster_up_s']:.0f} s")
        node_pages, pod_pages = await measure_live(cluster, scale, catalog, result)
    finally:
        say(f"{scale.title}: stopping cluster {cluster.name!r}")
        cluster.down()
    # Pure CPU work, on a quiet machine (the cluster's processes are gone).
    result["load_after_down"] = os.getloadavg()[0]
    result.update(offline_measurements(catalog, node_pages, pod_pages, scale.renders))
    say(
        f"{scale.title}: inventory {result['memory_mb']:.2f} MB for {result['events']} pods "
        f"({result['inventory_pods']} held); event {result['event_us_unchanged']:.1f} us apply, "
        f"{result['event_us_end_to_end']:.1f} us parse+apply"
    )
    return result
