"""From the inventory watch's raw Node and Pod dicts to allocation events for the writer.

The inventory keeps only slim records; the watch hands the feed each page of a relist and each
event while it still holds the whole objects. Accounted pods are those bound to a node and
made for a user (the hub's username annotation, or the job service's owner annotation).
What a pod holds is decided as the metrics decide it (metrics.unit_counts): the model of the
node offer its units use, or, on a virtual node, the pod's accelerator label, kind offloaded and
the node's site. Each pod's start is submitted once per watch (its id makes repeats harmless),
its end once (the hub watches finished pods too under accounting: a pod's finish arrives as a
MODIFIED event holding its containers' finishedAt); every relist submits the starts and known
ends of all the pods listed again and asks the writer to end the open allocations whose pod is
gone. Pure apart from `sink` and `clock`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from aiinfn_hub.inventory import DELETED
from aiinfn_hub.inventory_records import NodeRecord, PodRecord, RecordReader
from aiinfn_hub.labels import HUB_USERNAME, INTERLINK_SITE, OWNER_NAME

from . import events
from .events import AllocationEvent, InvalidEvent, Kind

log = logging.getLogger(__name__)
_EMPTY: Mapping[str, Any] = {}


class Sink(Protocol):
    """What the feed needs of the writer (writer.LedgerWriter)."""

    def submit(self, event: AllocationEvent) -> bool: ...

    def reconcile(self, live: Callable[[], Collection[str]], at: datetime) -> None: ...


class Place(NamedTuple):
    """What the feed keeps of a node: its record and, for a virtual node, its site."""

    record: NodeRecord
    site: str


def now() -> datetime:
    """The current whole second in UTC (when a deletion was seen, when a relist ended)."""
    return datetime.now(UTC).replace(microsecond=0)


def _accounted(obj: Mapping[str, Any]) -> bool:
    meta = obj.get("metadata") or _EMPTY
    annotations = meta.get("annotations") or _EMPTY
    spec = obj.get("spec") or _EMPTY
    return bool(spec.get("nodeName")) and bool(
        annotations.get(HUB_USERNAME) or annotations.get(OWNER_NAME)
    )


class AccountingFeed:
    """Turns the watch's objects into events for `sink`. `projects` maps project label values
    to catalog keys (names.label_value, as in metrics.py)."""

    def __init__(
        self,
        reader: RecordReader,
        sink: Sink,
        projects: Mapping[str, str],
        clock: Callable[[], datetime] = now,
    ) -> None:
        self.reader = reader
        self.sink = sink
        self.projects = dict(projects)
        self.clock = clock
        self.nodes: dict[str, Place] = {}
        self.live: dict[str, str] = {}  # pod key -> uid, for the pods whose start is submitted
        self.ended: set[str] = set()  # the keys in `live` whose end is submitted too
        self._nodes_listed: dict[str, Place] = {}
        self._pods_listed: dict[str, tuple[str, list[AllocationEvent]]] = {}

    # ---- nodes ----------------------------------------------------------------------------

    def _place(self, obj: Mapping[str, Any]) -> tuple[str, Place] | None:
        parsed = self.reader.node_record(obj)
        if parsed is None:
            return None
        labels = (obj.get("metadata") or _EMPTY).get("labels") or _EMPTY
        site = labels.get(INTERLINK_SITE)
        return parsed[0], Place(parsed[1], site if type(site) is str else "")

    def node_page(self, page: Iterable[Mapping[str, Any]]) -> None:
        for obj in page:
            placed = self._place(obj)
            if placed is not None:
                self._nodes_listed[placed[0]] = placed[1]

    def nodes_listed(self) -> None:
        self.nodes, self._nodes_listed = self._nodes_listed, {}

    def node_event(self, event_type: str, obj: Mapping[str, Any]) -> None:
        placed = self._place(obj)
        if placed is None:
            return
        if event_type == DELETED:
            self.nodes.pop(placed[0], None)
        else:
            self.nodes[placed[0]] = placed[1]

    # ---- pods -----------------------------------------------------------------------------

    def _holds(self, obj: Mapping[str, Any]) -> tuple[str, int, Kind, str]:
        """(model, units, kind, site) of an accounted pod, as the metrics count them."""
        node = (obj.get("spec") or _EMPTY).get("nodeName")
        # The record of the pod as if it still ran: an ending pod holds what it held.
        record = self.reader.pod_record({**obj, "status": _EMPTY})
        meta = obj.get("metadata") or _EMPTY
        batch = record.batch if record is not None else _batch(self.reader, meta)
        kind: Kind = "batch" if batch else "notebook"
        place = self.nodes.get(node) if type(node) is str else None
        if record is None:
            model, units = "", 0
        elif place is not None and not place.record.virtual:
            model, units = _offered(record, place.record)
        else:  # offloaded, or a node not seen yet: the pod's own accelerator label
            labelled = record.accelerator in self.reader.accelerator_keys
            model = record.accelerator if labelled else ""
            units = sum(count for _, count in record.demands) if labelled else 0
        if place is not None and place.record.virtual:
            return model, units, "offloaded", place.site or str(node)[: events.MAX_NAME]
        return model, units, kind, ""

    def _events(
        self, obj: Mapping[str, Any], deleted_at: datetime | None = None
    ) -> tuple[str, list[AllocationEvent]] | None:
        """(uid, events) of an accounted pod; None for others, or with fields out of bounds
        (logged: a bug or a hand-made pod, never a reason to stop the watch)."""
        if not _accounted(obj):
            return None
        model, units, kind, site = self._holds(obj)
        try:
            allocation = events.pod_allocation(
                obj, model=model, units=units, kind=kind, site=site, projects=self.projects
            )
            return allocation.allocation, events.pod_events(allocation, obj, deleted_at)
        except InvalidEvent as error:
            log.warning("accounting: pod %s not counted: %s", self.reader.pod_key(obj), error)
            return None

    def _submit(self, found: list[AllocationEvent]) -> None:
        for event in found:
            self.sink.submit(event)

    def begin_pods(self) -> None:
        """A relist of pods begins (its first page is coming)."""
        self._pods_listed = {}

    def pod_page(self, page: Iterable[Mapping[str, Any]]) -> None:
        for obj in page:
            found = self._events(obj)
            key = self.reader.pod_key(obj)
            if found is not None and found[1] and key is not None:
                self._pods_listed[key] = found

    def pods_listed(self) -> None:
        """The relist is complete: every listed pod's start again, then the reconciliation."""
        listed, self._pods_listed = self._pods_listed, {}
        self.live = {key: uid for key, (uid, _) in listed.items()}
        self.ended = {key for key, (_, found) in listed.items() if len(found) > 1}
        for _, found in listed.values():
            self._submit(found)
        self.sink.reconcile(lambda: self.live.values(), self.clock())

    def pod_event(self, event_type: str, obj: Mapping[str, Any]) -> None:
        key = self.reader.pod_key(obj)
        if key is None:
            return
        uid = (obj.get("metadata") or _EMPTY).get("uid")
        if event_type == DELETED:
            ended = key in self.ended and self.live.get(key) == uid
            self.live.pop(key, None)
            self.ended.discard(key)
            found = None if ended else self._events(obj, deleted_at=self.clock())
            if found is not None:  # else its end was submitted when it finished
                self._submit(found[1])
            return
        if self.live.get(key) == uid and key in self.ended:
            return  # a finished pod's later changes (a finalizer removed) are no news
        found = self._events(obj)
        if found is None or not found[1]:
            return  # not accounted, or not bound yet
        uid, implied = found
        if self.live.get(key) == uid:
            # Its start is submitted already: only an end is news (the pod has just ended).
            implied = [event for event in implied if event.phase == "end"]
        else:
            self.ended.discard(key)
        self.live[key] = uid
        if any(event.phase == "end" for event in implied):
            self.ended.add(key)
        self._submit(implied)


def _batch(reader: RecordReader, meta: Mapping[str, Any]) -> bool:
    """A pod holding no accelerator is batch as the inventory would say (queued or a Job's)."""
    if reader.queue_label in (meta.get("labels") or _EMPTY):
        return True
    owners = meta.get("ownerReferences") or ()
    return any(isinstance(o, dict) and o.get("kind") == "Job" for o in owners)


def _offered(record: PodRecord, node: NodeRecord) -> tuple[str, int]:
    """The model of the node offer the pod's units use, and those units (one model a pod)."""
    held = [(node.offers[r][0], n) for r, n in record.demands if r in node.offers]
    if not held:
        return "", 0
    model = held[0][0]
    return model, sum(n for m, n in held if m == model)
