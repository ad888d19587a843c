"""Measurements with no cluster running, over the pod objects the API server returned: the
inventory's memory, renders of ours on a quiet machine, and the cost of one watch event."""

from __future__ import annotations

import gc
import json
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from aiinfn_hub.catalog import Catalog
from aiinfn_hub.inventory import Inventory
from aiinfn_hub.k8s_watch import parse_event

from .renders import FormPath, render_ours
from .settings import USER_GROUPS


def time_events(fn: Callable[[], int], repeats: int = 5, at_least: int = 20000) -> float:
    """Median over `repeats` of (seconds / event) for fn(), which returns how many events it
    applied; each repeat calls fn() until it applied `at_least` events."""
    per_event = []
    for _ in range(repeats):
        events = 0
        started = time.perf_counter()
        while events < at_least:
            events += fn()
        per_event.append((time.perf_counter() - started) / events)
    return statistics.median(per_event)


def inventory_memory(
    catalog: Catalog, node_pages: list[bytes], pod_pages: list[bytes]
) -> tuple[Inventory, dict[str, Any]]:
    """An inventory fed page by page as the watcher's relist does, and its memory (tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    inventory = Inventory(catalog.accelerators)
    nodes: dict[str, Any] = {}
    for page in node_pages:
        nodes.update(inventory.slim_nodes(json.loads(page)["items"]))
    inventory.replace(nodes=nodes)
    pods: dict[str, Any] = {}
    for page in pod_pages:
        pods.update(inventory.slim_pods(json.loads(page)["items"]))
    inventory.replace(pods=pods)
    del nodes, pods, page
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return inventory, {
        "memory_mb": (current - before) / 2**20,
        "memory_peak_mb": (peak - before) / 2**20,
        "inventory_nodes": inventory.node_count,
        "inventory_pods": inventory.pod_count,
    }


def quiet_renders(catalog: Catalog, inventory: Inventory, renders: int) -> list[float]:
    """Milliseconds of each of `renders` renders of ours, after 20 to warm up."""
    path = FormPath(catalog)
    for _ in range(20):
        render_ours(path, inventory)
    gc.collect()
    samples = []
    for _ in range(renders):
        t0 = time.perf_counter_ns()
        render_ours(path, inventory)
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    return samples


def event_costs(inventory: Inventory, pod_pages: list[bytes]) -> dict[str, Any]:
    """Microseconds per watch event over the real pod objects: applied only (unchanged, churn),
    and parsed from JSON then applied, as the watcher does per line."""
    objects = [obj for page in pod_pages for obj in json.loads(page)["items"]]
    lines = [
        json.dumps({"type": "MODIFIED", "object": obj}, separators=(",", ":")).encode()
        for obj in objects
    ]

    def unchanged() -> int:  # the common case: a status update that moves no unit
        for obj in objects:
            inventory.apply_pod("MODIFIED", obj)
        return len(objects)

    def churn() -> int:  # every pod leaves and comes back: every count moves
        for obj in objects:
            inventory.apply_pod("DELETED", obj)
            inventory.apply_pod("ADDED", obj)
        return 2 * len(objects)

    def end_to_end() -> int:  # what the watcher does per line: json parse, then apply
        for line in lines:
            event_type, obj = parse_event(line)
            inventory.apply_pod(event_type, obj)
        return len(lines)

    return {
        "events": len(objects),
        "event_bytes": statistics.mean(len(line) for line in lines),
        "event_us_unchanged": time_events(unchanged) * 1e6,
        "event_us_churn": time_events(churn) * 1e6,
        "event_us_end_to_end": time_events(end_to_end) * 1e6,
    }


def offline_measurements(
    catalog: Catalog, node_pages: list[bytes], pod_pages: list[bytes], renders: int
) -> dict[str, Any]:
    """Inventory memory, renders of ours with no cluster running, and the cost of one watch
    event, over the real pod objects the API server returned."""
    inventory, result = inventory_memory(catalog, node_pages, pod_pages)
    result["quiet_ours_ms"] = quiet_renders(catalog, inventory, renders)
    result.update(event_costs(inventory, pod_pages))
    result["counts_match_recount"] = inventory.snapshot(USER_GROUPS) == inventory.recount(
        USER_GROUPS
    )
    return result
