"""The hub's Prometheus metrics (docs/monitoring.md), served by JupyterHub at /hub/metrics.

JupyterHub serves prometheus_client's default registry to tokens with the `read:metrics` scope;
`register_hub` adds ours there once per registry (tests start several hubs in one process). The
accelerator and watch metrics are a custom collector computed at scrape time from the inventory
the spawn page already keeps current: a scrape reads the per-model sums and walks the pods that
hold accelerators once, with no Kubernetes call. Every label value comes from a bounded set: the
catalog's models and projects, the four states, the refusal reasons below.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Collection, Iterator
from typing import Any, NamedTuple

from prometheus_client import REGISTRY, CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import names
from .inventory import Inventory

STATES = ("free", "notebook", "batch", "offloaded")
# What errors.UserError says of a refused spawn (its `reason`); anything else counts as "other".
REFUSAL_REASONS = ("invalid", "policy", "quota", "capacity", "token", "other")
# JupyterHub 5.x has no SpawnException: the refusal arrives as a plain HTTPError, whose status
# is all that is left of the reason (503 is also "token", rarer than a full cluster).
_STATUS_REASONS = {400: "invalid", 403: "policy", 503: "capacity"}
_WATCH_COUNTS = {
    "events": "Watch events applied (ADDED, MODIFIED, DELETED).",
    "bookmarks": "Watch bookmarks received.",
    "relists": "Full lists (at start, after a failure or a 410).",
    "errors": "Failed lists or watches (each retried with backoff).",
    "expired": "Watches resumed from a resourceVersion the API server no longer had (410).",
}

SPAWN_REFUSALS = Counter(
    "aiinfn_spawn_refusals",
    "Spawns refused before or while their pod started, by reason (invalid options, policy, "
    "quota, capacity, token).",
    ["reason"],
    registry=None,
)
for _reason in REFUSAL_REASONS:
    SPAWN_REFUSALS.labels(reason=_reason)  # each series exists from the start, at 0

# The accounting writer's counters (accounting/writer.py): attribute -> (name, help).
_ACCOUNTING_COUNTS = {
    "written": ("written_events", "Allocation events new to the ledger (replays not counted)."),
    "dropped": ("dropped_events", "Events dropped because the writer's queue was full."),
    "refused": ("refused_events", "Events the database refused (a bug: dropped alone)."),
    "failures": ("write_failures", "Failed connects or writes (the database unreachable)."),
    "closed": ("reconciled_ends", "Open allocations ended after a relist (their pod gone)."),
}

_registered: weakref.WeakSet[CollectorRegistry] = weakref.WeakSet()


class UnitCounts(NamedTuple):
    """Accelerator units by (model, state), and held by (project, model, kind)."""

    by_state: dict[tuple[str, str], int]
    by_project: dict[tuple[str, str, str], int]


def unit_counts(inventory: Inventory, projects: Collection[str]) -> UnitCounts:
    """Units of every counted model in each state, and per project. Free, notebook and batch
    cover notebook capacity (Ready, schedulable, local nodes; every reservation); offloaded,
    units held on virtual nodes, by the pod's accelerator label (a remote site's devices carry
    no product label). A pod counts for a project when its project label names one (the label
    holds names.label_value of the project's key)."""
    by_label = {names.label_value(key): key for key in projects}
    models = inventory.accelerator_keys
    by_state = {(model, state): 0 for model in models for state in STATES}
    for model, counts in inventory.totals().items():
        by_state[model, "free"] = counts.free
        by_state[model, "notebook"] = counts.notebooks
        by_state[model, "batch"] = counts.batch
    by_project: dict[tuple[str, str, str], int] = {}
    for pod, node in inventory.placed_pods():
        if node.virtual:
            if (pod.accelerator, "offloaded") not in by_state:
                continue  # no catalog model to count it under
            held = [(pod.accelerator, sum(count for _, count in pod.demands))]
            kind = "offloaded"
            by_state[pod.accelerator, kind] += held[0][1]
        elif node.eligible:
            held = [(node.offers[r][0], n) for r, n in pod.demands if r in node.offers]
            kind = "batch" if pod.batch else "notebook"
        else:
            continue  # a cordoned or NotReady node is no capacity
        project = by_label.get(pod.project)
        if project is not None:
            for model, count in held:
                key = (project, model, kind)
                by_project[key] = by_project.get(key, 0) + count
    return UnitCounts(by_state, by_project)


def refusal_reason(error: BaseException) -> str | None:
    """The reason label of a failed spawn, or None when it was no refusal (a crash, a bug, a
    timeout): the UserError's reason errors.to_http_error kept, else what its HTTP status says."""
    status = getattr(error, "status_code", None)
    if not isinstance(status, int) or not (400 <= status < 500 or status == 503):
        return None
    reason = getattr(error, "aiinfn_reason", None) or getattr(error, "reason", None)
    if reason in REFUSAL_REASONS:
        return reason
    return _STATUS_REASONS.get(status, "other")


def count_refusal(error: BaseException) -> None:
    """Count a spawn that failed with `error` if it was a refusal."""
    reason = refusal_reason(error)
    if reason is not None:
        SPAWN_REFUSALS.labels(reason=reason).inc()


class HubCollector(Collector):
    """Accelerator units and the inventory watch's health, read from the hub's shared platform
    state at each scrape (`platform()`: hubstate.Platform, or None before the first spawn page
    or spawn has loaded it). Units only once the inventory has listed nodes and pods."""

    def __init__(self, platform: Callable[[], Any]) -> None:
        self.platform = platform

    def describe(self) -> list[Metric]:
        """The names, without reading the platform (prometheus_client checks them)."""
        return [*_unit_families(), *_watch_families().all(), *_accounting_metrics(None)]

    def collect(self) -> Iterator[Metric]:
        platform = self.platform()
        writer = getattr(platform, "accounting", None)
        if writer is not None:
            yield from _accounting_metrics(writer)
        watcher = platform.watcher if platform is not None else None
        if watcher is None:
            return  # no inventory yet: no series rather than zeros that look like a full farm
        yield from _watch_metrics(watcher.watches)
        if not watcher.synced.is_set():
            return  # counts of a partial list would be wrong
        states, projects = _unit_families()
        counts = unit_counts(platform.inventory, platform.catalog.projects)
        for (model, state), value in counts.by_state.items():
            states.add_metric([model, state], value)
        for (project, model, kind), value in counts.by_project.items():
            projects.add_metric([project, model, kind], value)
        yield states
        yield projects


def _unit_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    return (
        GaugeMetricFamily(
            "aiinfn_accelerator_units",
            "Accelerator units by model and state: free, held by notebooks, held by batch jobs "
            "(on notebook capacity), held by offloaded jobs at remote sites.",
            labels=["model", "state"],
        ),
        GaugeMetricFamily(
            "aiinfn_accelerator_project_units",
            "Accelerator units held by the pods of each project, by model and kind (notebook, "
            "batch, offloaded).",
            labels=["project", "model", "kind"],
        ),
    )


class _WatchFamilies(NamedTuple):
    synced: GaugeMetricFamily
    last_event: GaugeMetricFamily
    counters: list[CounterMetricFamily]  # in the order of _WATCH_COUNTS

    def all(self) -> list[Metric]:
        return [self.synced, self.last_event, *self.counters]


def _watch_families() -> _WatchFamilies:
    return _WatchFamilies(
        GaugeMetricFamily(
            "aiinfn_inventory_watch_synced",
            "1 once the inventory's watch has listed its resource, else 0.",
            labels=["resource"],
        ),
        GaugeMetricFamily(
            "aiinfn_inventory_watch_last_event_timestamp_seconds",
            "Unix time of the last line the inventory's watch received (bookmarks included); "
            "its age is time() minus this.",
            labels=["resource"],
        ),
        [
            CounterMetricFamily(f"aiinfn_inventory_watch_{name}", text, labels=["resource"])
            for name, text in _WATCH_COUNTS.items()
        ],
    )


def _watch_metrics(watches: Collection[Any]) -> list[Metric]:
    """The families of `_watch_families` for the inventory's ListWatches."""
    families = _watch_families()
    for watch in watches:
        resource = [watch.name.removeprefix("inventory ")]
        families.synced.add_metric(resource, 1 if watch.synced.is_set() else 0)
        if watch.last_event_at is not None:
            families.last_event.add_metric(resource, watch.last_event_at)
        stats = watch.stats()
        for family, name in zip(families.counters, _WATCH_COUNTS, strict=True):
            family.add_metric(resource, stats.get(name, 0))
    return families.all()


def _accounting_metrics(writer: Any) -> list[Metric]:
    """The accounting writer's queue, counters and last commit (families only for None)."""
    queued = GaugeMetricFamily(
        "aiinfn_accounting_queued_events",
        "Allocation events waiting to be written to the ledger.",
    )
    last = GaugeMetricFamily(
        "aiinfn_accounting_last_commit_timestamp_seconds",
        "Unix time of the ledger's last committed batch (none since the hub started: absent).",
    )
    counters = [
        CounterMetricFamily(f"aiinfn_accounting_{name}", text)
        for name, text in _ACCOUNTING_COUNTS.values()
    ]
    if writer is not None:
        queued.add_metric([], writer.pending)
        if writer.last_commit_at is not None:
            last.add_metric([], writer.last_commit_at)
        for family, attribute in zip(counters, _ACCOUNTING_COUNTS, strict=True):
            family.add_metric([], getattr(writer, attribute))
    return [queued, last, *counters]


def register_hub(
    platform: Callable[[], Any], registry: CollectorRegistry = REGISTRY
) -> HubCollector | None:
    """Register the hub's metrics in `registry` (JupyterHub serves the default one), once:
    the collector reading `platform()` and the spawn refusals. None if already there."""
    if registry in _registered:
        return None
    collector = HubCollector(platform)
    registry.register(collector)
    registry.register(SPAWN_REFUSALS)
    _registered.add(registry)
    return collector
