"""Accelerator inventory: how many units of each accelerator are free right now.

The spawn page shows "k of N free" on every render, so the counts must be read without any
Kubernetes call. This module is the pure counting core: the watcher (`inventory_watch.py`) feeds
it node and pod objects as raw API dicts; it keeps only slim records (`inventory_records.py` reads
them) and maintains per
(accelerator, reservation) aggregates incrementally, so an event costs a few dict lookups and a
snapshot a few additions. `recount` recomputes everything from the slim records, which is how
the tests prove the increments right.

Rules, in short: a node is notebook capacity if it is Ready, not cordoned and not a virtual
(offload) node; a pod occupies units while it is bound and not finished; a pod is batch
(preemptible) if Kueue queued it or a Job owns it, otherwise it is a notebook. A batch pod belongs
to the Job its job-name label names, else it is a job of its own; the batch jobs of an
accelerator are the distinct jobs with pods holding its units (those a notebook may stop).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Any, NamedTuple, TypeVar

from aiinfn_hub.catalog import Accelerator
from aiinfn_hub.inventory_records import (
    RESERVATION_TAINT,
    NodeRecord,
    PodRecord,
    RecordReader,
)
from aiinfn_hub.labels import KUEUE_QUEUE

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"
EVENT_TYPES = frozenset({ADDED, MODIFIED, DELETED})

_EMPTY: Mapping[str, Any] = {}
_Key = TypeVar("_Key")


class Counts(NamedTuple):
    """Units of one accelerator: on eligible nodes, used by notebooks, used by batch, free; and
    the batch jobs holding `batch` (distinct jobs, not pods: what a notebook would stop)."""

    total: int = 0
    notebooks: int = 0
    batch: int = 0
    free: int = 0
    free_if_preempted: int = 0
    batch_jobs: int = 0


def _visible(groups: Collection[str]) -> tuple[str | None, ...]:
    """Reservations a user in `groups` may use: unreserved (None) and their groups, once each."""
    if isinstance(groups, str):
        groups = (groups,)
    return tuple(dict.fromkeys((None, *groups)))


def _distinct(maps: list[dict[str, int]]) -> int:
    """How many keys the maps hold together, each once."""
    if not maps:
        return 0
    if len(maps) == 1:
        return len(maps[0])
    return len(set().union(*maps))


def _clamped(capacity: int, notebooks: int, batch: int) -> tuple[int, int]:
    """(free, free_if_preempted) of one node: what is left, never below zero."""
    if_preempted = capacity - notebooks if capacity > notebooks else 0
    return (if_preempted - batch if if_preempted > batch else 0), if_preempted


class _Bucket:
    """Sums over the eligible nodes of one (accelerator, reservation), plus histograms of the
    per-node free units so the largest free block is found without scanning nodes."""

    __slots__ = (
        "total",
        "notebooks",
        "batch",
        "free",
        "free_if_preempted",
        "free_hist",
        "preempted_hist",
        "jobs",
    )

    def __init__(self) -> None:
        self.total = self.notebooks = self.batch = self.free = self.free_if_preempted = 0
        self.free_hist: dict[int, int] = {}
        self.preempted_hist: dict[int, int] = {}
        # Batch job -> how many of its pods hold units here (a job leaves at zero).
        self.jobs: dict[str, int] = {}


def _bump(histogram: dict[_Key, int], value: _Key, sign: int) -> None:
    count = histogram.get(value, 0) + sign
    if count:
        histogram[value] = count
    else:
        del histogram[value]


class Inventory(RecordReader):
    """Slim records of nodes and pods (read by RecordReader), and per-accelerator counts kept
    current per event.

    Not thread-safe by design: one event loop applies events and reads snapshots.
    """

    def __init__(
        self,
        accelerators: Mapping[str, Accelerator],
        *,
        reservation_taint: str = RESERVATION_TAINT,
        queue_label: str = KUEUE_QUEUE,
    ) -> None:
        super().__init__(accelerators, reservation_taint=reservation_taint, queue_label=queue_label)
        self._nodes: dict[str, NodeRecord] = {}
        self._pods: dict[str, PodRecord] = {}
        self._rebuild()

    # ---- events ---------------------------------------------------------------------------

    def apply_node(self, event_type: str, obj: Mapping[str, Any] | None) -> bool:
        """Apply one watch event for a node; True if any count may have changed."""
        if event_type not in EVENT_TYPES:
            return False
        parsed = self.node_record(obj)
        if parsed is None:
            return False
        name, record = parsed
        new = None if event_type == DELETED else record
        old = self._nodes.get(name)
        if old == new:
            return False
        if old is not None and new is not None and old.offers == new.offers:
            # Readiness, cordon or reservation flipped: usage stays, the bucket moves.
            self._contribute_node(name, old, -1)
            self._nodes[name] = new
            self._contribute_node(name, new, +1)
            return True
        if old is not None:
            self._contribute_node(name, old, -1)
            del self._nodes[name], self._usage[name]
        if new is not None:
            self._nodes[name] = new
            self._usage[name] = self._node_usage(name, new)
            self._contribute_node(name, new, +1)
        return True

    def apply_pod(self, event_type: str, obj: Mapping[str, Any] | None) -> bool:
        """Apply one watch event for a pod; True if any count may have changed."""
        if event_type not in EVENT_TYPES:
            return False
        key = self.pod_key(obj)
        if key is None:
            return False
        new = None if event_type == DELETED else self.pod_record(obj)
        old = self._pods.get(key)
        if old == new:
            return False
        if old is not None:
            del self._pods[key]
            on_node = self._pods_by_node[old.node]
            del on_node[key]
            if not on_node:
                del self._pods_by_node[old.node]
            self._occupy(old, -1)
        if new is not None:
            self._pods[key] = new
            self._pods_by_node.setdefault(new.node, {})[key] = new
            self._occupy(new, +1)
        return True

    def reset(
        self,
        nodes: Iterable[Mapping[str, Any]] | None = None,
        pods: Iterable[Mapping[str, Any]] | None = None,
    ) -> None:
        """Rebuild from full lists (after a relist, e.g. on 410 Gone); None keeps that kind."""
        self.replace(
            None if nodes is None else self.slim_nodes(nodes),
            None if pods is None else self.slim_pods(pods),
        )

    def replace(
        self,
        nodes: Mapping[str, NodeRecord] | None = None,
        pods: Mapping[str, PodRecord] | None = None,
    ) -> None:
        """Rebuild from slim records (see `slim_nodes`/`slim_pods`); None keeps that kind."""
        if nodes is not None:
            self._nodes = dict(nodes)
        if pods is not None:
            self._pods = dict(pods)
        self._rebuild()

    def _rebuild(self) -> None:
        self._pods_by_node: dict[str, dict[str, PodRecord]] = {}
        for key, pod in self._pods.items():
            self._pods_by_node.setdefault(pod.node, {})[key] = pod
        self._usage: dict[str, dict[str, list[int]]] = {}
        self._buckets: dict[str, dict[str | None, _Bucket]] = {k: {} for k in self.accelerator_keys}
        for name, node in self._nodes.items():
            self._usage[name] = self._node_usage(name, node)
            self._contribute_node(name, node, +1)

    def _node_usage(self, name: str, node: NodeRecord) -> dict[str, list[int]]:
        """[notebook units, batch units] per accelerator the node offers, from its pods."""
        usage = {accelerator: [0, 0] for accelerator, _ in node.offers.values()}
        for pod in self._pods_by_node.get(name, _EMPTY).values():
            for resource, count in pod.demands:
                offer = node.offers.get(resource)
                if offer is not None:
                    usage[offer[0]][pod.batch] += count  # index 1 (True) is batch
        return usage

    def _contribute_node(self, name: str, node: NodeRecord, sign: int) -> None:
        if node.eligible:
            usage = self._usage[name]
            for accelerator, capacity in node.offers.values():
                notebooks, batch = usage[accelerator]
                self._contribute(accelerator, node.reserved_for, capacity, notebooks, batch, sign)
            for pod in self._pods_by_node.get(name, _EMPTY).values():
                if pod.job:
                    self._count_job(node, pod, sign)

    def _count_job(self, node: NodeRecord, pod: PodRecord, sign: int) -> None:
        """Add or remove a batch pod's job in the buckets of the accelerators it holds there."""
        for resource, _ in pod.demands:
            offer = node.offers.get(resource)
            if offer is not None:
                _bump(self._bucket(offer[0], node.reserved_for).jobs, pod.job, sign)

    def _bucket(self, accelerator: str, reserved_for: str | None) -> _Bucket:
        buckets = self._buckets[accelerator]
        bucket = buckets.get(reserved_for)
        if bucket is None:
            bucket = buckets[reserved_for] = _Bucket()
        return bucket

    def _occupy(self, pod: PodRecord, sign: int) -> None:
        """Add (sign=+1) or remove (-1) a pod's units on its node, if the node offers them."""
        node = self._nodes.get(pod.node)
        if node is None:
            return  # seen before its node (or after it left): counted when the node appears
        usage = self._usage[pod.node]
        for resource, count in pod.demands:
            offer = node.offers.get(resource)
            if offer is None:
                continue
            accelerator, capacity = offer
            used = usage[accelerator]
            if node.eligible:
                self._contribute(accelerator, node.reserved_for, capacity, used[0], used[1], -1)
            used[pod.batch] += sign * count
            if node.eligible:
                self._contribute(accelerator, node.reserved_for, capacity, used[0], used[1], +1)
        if pod.job and node.eligible:
            self._count_job(node, pod, sign)

    def _contribute(
        self,
        accelerator: str,
        reserved_for: str | None,
        capacity: int,
        notebooks: int,
        batch: int,
        sign: int,
    ) -> None:
        """Add or remove one node's share of one accelerator in its bucket."""
        bucket = self._bucket(accelerator, reserved_for)
        free, if_preempted = _clamped(capacity, notebooks, batch)
        bucket.total += sign * capacity
        bucket.notebooks += sign * notebooks
        bucket.batch += sign * batch
        bucket.free += sign * free
        bucket.free_if_preempted += sign * if_preempted
        _bump(bucket.free_hist, free, sign)
        _bump(bucket.preempted_hist, if_preempted, sign)

    # ---- reading --------------------------------------------------------------------------

    def snapshot(self, groups: Collection[str] = ()) -> dict[str, Counts]:
        """Counts per accelerator (every non-CPU catalog entry, zeros if absent) over notebook
        capacity that is unreserved or reserved for one of `groups`. No I/O, no node scan."""
        visible = _visible(groups)
        result = {}
        for accelerator, buckets in self._buckets.items():
            total = notebooks = batch = free = if_preempted = 0
            jobs = []
            for reservation in visible:
                bucket = buckets.get(reservation)
                if bucket is not None:
                    total += bucket.total
                    notebooks += bucket.notebooks
                    batch += bucket.batch
                    free += bucket.free
                    if_preempted += bucket.free_if_preempted
                    if bucket.jobs:
                        jobs.append(bucket.jobs)
            result[accelerator] = Counts(
                total, notebooks, batch, free, if_preempted, _distinct(jobs)
            )
        return result

    def largest_free_block(
        self, accelerator: str, groups: Collection[str] = (), *, preempt: bool = False
    ) -> int:
        """Most free units of `accelerator` on one eligible node visible to `groups` (a request
        for more cannot fit anywhere); with preempt=True, as if batch pods were evicted."""
        buckets: Mapping[str | None, _Bucket] = self._buckets.get(accelerator, {})
        largest = 0
        for reservation in _visible(groups):
            bucket = buckets.get(reservation)
            if bucket is not None:
                histogram = bucket.preempted_hist if preempt else bucket.free_hist
                if histogram:
                    largest = max(largest, max(histogram))
        return largest

    def per_node(self, groups: Collection[str] = ()) -> dict[tuple[str, str], Counts]:
        """Counts per (accelerator, node) over eligible nodes visible to `groups`."""
        visible = set(_visible(groups))
        result = {}
        for name, node in self._nodes.items():
            if node.eligible and node.reserved_for in visible:
                usage = self._usage[name]
                jobs: dict[str, set[str]] = {}
                for pod in self._pods_by_node.get(name, _EMPTY).values():
                    if pod.job:
                        for resource, _ in pod.demands:
                            if resource in node.offers:
                                jobs.setdefault(node.offers[resource][0], set()).add(pod.job)
                for accelerator, capacity in node.offers.values():
                    notebooks, batch = usage[accelerator]
                    result[accelerator, name] = Counts(
                        capacity,
                        notebooks,
                        batch,
                        *_clamped(capacity, notebooks, batch),
                        len(jobs.get(accelerator, ())),
                    )
        return result

    def _recount_jobs(self, groups: Collection[str]) -> dict[tuple[str, str], set[str]]:
        """Batch jobs per (accelerator, node) on eligible nodes visible to `groups`, from the
        slim records alone."""
        visible = set(_visible(groups))
        jobs: dict[tuple[str, str], set[str]] = {}
        for pod in self._pods.values():
            node = self._nodes.get(pod.node)
            if node is None or not pod.job or not node.eligible or node.reserved_for not in visible:
                continue
            for resource, _ in pod.demands:
                offer = node.offers.get(resource)
                if offer is not None:
                    jobs.setdefault((offer[0], pod.node), set()).add(pod.job)
        return jobs

    def recount_per_node(self, groups: Collection[str] = ()) -> dict[tuple[str, str], Counts]:
        """`per_node` recomputed from the slim records alone, ignoring every aggregate."""
        used: dict[tuple[str, str], list[int]] = {}
        for pod in self._pods.values():
            node = self._nodes.get(pod.node)
            if node is None:
                continue
            for resource, count in pod.demands:
                offer = node.offers.get(resource)
                if offer is not None:
                    pair = used.setdefault((offer[0], pod.node), [0, 0])
                    pair[1 if pod.batch else 0] += count
        jobs = self._recount_jobs(groups)
        visible = set(_visible(groups))
        result = {}
        for name, node in self._nodes.items():
            if node.eligible and node.reserved_for in visible:
                for accelerator, capacity in node.offers.values():
                    notebooks, batch = used.get((accelerator, name), (0, 0))
                    result[accelerator, name] = Counts(
                        capacity,
                        notebooks,
                        batch,
                        *_clamped(capacity, notebooks, batch),
                        len(jobs.get((accelerator, name), ())),
                    )
        return result

    def recount(self, groups: Collection[str] = ()) -> dict[str, Counts]:
        """`snapshot` recomputed from the slim records alone (the property tests' oracle)."""
        sums = {accelerator: [0, 0, 0, 0, 0] for accelerator in self.accelerator_keys}
        for (accelerator, _), counts in self.recount_per_node(groups).items():
            row = sums[accelerator]
            for i, value in enumerate(counts[:5]):
                row[i] += value
        jobs: dict[str, set[str]] = {accelerator: set() for accelerator in self.accelerator_keys}
        for (accelerator, _), names in self._recount_jobs(groups).items():
            jobs[accelerator] |= names
        return {
            accelerator: Counts(*row)._replace(batch_jobs=len(jobs[accelerator]))
            for accelerator, row in sums.items()
        }

    def totals(self) -> dict[str, Counts]:
        """`snapshot` over all notebook capacity, every reservation included (the metrics)."""
        return self.snapshot({r for b in self._buckets.values() for r in b if r is not None})

    def placed_pods(self) -> Iterator[tuple[PodRecord, NodeRecord]]:
        """Each pod that holds units with the record of its node (pods of unknown nodes left
        out): what the metrics add up by project and find offloaded, in one pass."""
        for pod in self._pods.values():
            node = self._nodes.get(pod.node)
            if node is not None:
                yield pod, node

    @property
    def node_count(self) -> int:
        """Nodes known (any state)."""
        return len(self._nodes)

    @property
    def pod_count(self) -> int:
        """Pods that occupy accelerator units (on known nodes or not)."""
        return len(self._pods)
