"""Raw Node and Pod objects -> the slim records the inventory counts (inventory.py).

The parsing half of the inventory, kept apart from the counting: which accelerator a node offers
and whether it is notebook capacity, which units a pod holds and whether it is batch. Records are
small named tuples of interned strings, so the inventory holds thousands of pods cheaply, and
anything unreadable offers or occupies nothing rather than raising.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from aiinfn_hub import quantities
from aiinfn_hub.catalog import Accelerator
from aiinfn_hub.labels import (
    ACCELERATOR,
    INTERLINK_TAINT_PREFIX,
    JOB_NAME,
    KUEUE_QUEUE,
    LEGACY_JOB_NAME,
    PROJECT,
    VIRTUAL_KUBELET_TAINT,
    VIRTUAL_NODE,
    VIRTUAL_NODE_VALUE,
)

RESERVATION_TAINT = "reserved"
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})

_EMPTY: Mapping[str, Any] = {}


class NodeRecord(NamedTuple):
    """What is kept of a node: is it notebook capacity, for whom, and what it offers."""

    eligible: bool
    reserved_for: str | None
    offers: Mapping[str, tuple[str, int]]  # resource -> (accelerator key, units)
    virtual: bool = False  # an offload (virtual-kubelet) node: its pods run at a remote site


class PodRecord(NamedTuple):
    """What is kept of a pod that occupies accelerator units (other pods are not kept)."""

    node: str
    demands: tuple[tuple[str, int], ...]  # (resource, units > 0), sorted
    batch: bool
    job: str = ""  # a batch pod's job: "<namespace>/job/<name>" or "<namespace>/pod/<name>"
    # Its accelerator and project labels, as set (the metrics' model and project; "" if none).
    accelerator: str = ""
    project: str = ""


def units(value: Any) -> int:
    """Whole units of an extended-resource quantity ("2", "2k", 2); 0 for anything unreadable."""
    if type(value) is int:
        return value if value > 0 else 0
    if not isinstance(value, str):
        return 0
    try:
        number = int(value)
    except ValueError:
        return _quantity(value)
    return number if number > 0 else 0


def _quantity(text: str) -> int:
    try:
        number = int(quantities.parse(text))
    except ValueError:
        return 0
    return number if number > 0 else 0


def _label(labels: Mapping[str, Any], key: str) -> str:
    """A label's value, interned (pods share a few), or "" if it is not a short string."""
    value = labels.get(key)
    return sys.intern(value) if type(value) is str and len(value) <= 63 else ""


def job_key(meta: Mapping[str, Any], labels: Mapping[str, Any]) -> str:
    """The job a batch pod belongs to: its Job (job-name label), else the pod itself. Interned,
    so the pods of one Job share one string."""
    namespace = meta.get("namespace") or ""
    for label in (JOB_NAME, LEGACY_JOB_NAME):
        name = labels.get(label)
        if name and type(name) is str:
            return sys.intern(f"{namespace}/job/{name}")
    return sys.intern(f"{namespace}/pod/{meta.get('name')}")


class RecordReader:
    """Reads Node and Pod dicts into records for one catalog's accelerators."""

    def __init__(
        self,
        accelerators: Mapping[str, Accelerator],
        *,
        reservation_taint: str = RESERVATION_TAINT,
        queue_label: str = KUEUE_QUEUE,
    ) -> None:
        self.reservation_taint = reservation_taint
        self.queue_label = queue_label
        # Counted: accelerators with a resource. Per resource, the accelerators that may claim
        # it on a node: most specific labels first (so a label-less fallback never shadows a
        # product), then catalog order.
        keys: list[str] = []
        by_resource: dict[str, list[Accelerator]] = {}
        for accelerator in accelerators.values():
            if accelerator.kind != "cpu" and accelerator.resource:
                keys.append(accelerator.key)
                by_resource.setdefault(accelerator.resource, []).append(accelerator)
        self.accelerator_keys: tuple[str, ...] = tuple(keys)
        self._by_resource = {
            r: tuple(sorted(accs, key=lambda a: -len(a.node_labels)))
            for r, accs in by_resource.items()
        }
        self._resources = frozenset(by_resource)

    def node_record(self, obj: Mapping[str, Any] | None) -> tuple[str, NodeRecord] | None:
        """(name, record) of a Node dict; None if it has no name. Unreadable parts offer nothing."""
        if obj is None:
            return None
        try:
            meta = obj.get("metadata") or _EMPTY
            name = meta.get("name")
        except AttributeError:
            return None
        if not isinstance(name, str) or not name:
            return None
        try:
            record = self._node_record(obj, meta)
        except (AttributeError, TypeError):
            record = NodeRecord(False, None, {})
        return sys.intern(name), record

    def _node_record(self, obj: Mapping[str, Any], meta: Mapping[str, Any]) -> NodeRecord:
        labels = meta.get("labels") or _EMPTY
        spec = obj.get("spec") or _EMPTY
        status = obj.get("status") or _EMPTY
        virtual = labels.get(VIRTUAL_NODE) == VIRTUAL_NODE_VALUE
        reserved_for = None
        for taint in spec.get("taints") or ():
            key = taint.get("key") if isinstance(taint, dict) else None
            if not isinstance(key, str):
                continue
            if key == VIRTUAL_KUBELET_TAINT or key.startswith(INTERLINK_TAINT_PREFIX):
                virtual = True
            elif key == self.reservation_taint and reserved_for is None:
                value = taint.get("value")
                reserved_for = value if isinstance(value, str) else ""
        ready = False
        for condition in status.get("conditions") or ():
            if isinstance(condition, dict) and condition.get("type") == "Ready":
                ready = condition.get("status") == "True"
        offers: dict[str, tuple[str, int]] = {}
        allocatable = status.get("allocatable") or _EMPTY
        for resource, candidates in self._by_resource.items():
            count = units(allocatable.get(resource))
            if count:
                for accelerator in candidates:
                    if accelerator.offered_by(labels):
                        offers[resource] = (accelerator.key, count)
                        break
        eligible = ready and spec.get("unschedulable") is not True and not virtual
        return NodeRecord(eligible, reserved_for, offers, virtual)

    @staticmethod
    def pod_key(obj: Mapping[str, Any] | None) -> str | None:
        """The "namespace/name" key of a Pod dict, or None if it has no name."""
        if obj is None:
            return None
        try:
            meta = obj["metadata"]
            name = meta["name"]
            namespace = meta.get("namespace") or ""
            return namespace + "/" + name if name and type(name) is str else None
        except (KeyError, TypeError, AttributeError):
            return None

    def pod_record(self, obj: Mapping[str, Any] | None) -> PodRecord | None:
        """The slim record of a Pod dict if it occupies accelerator units now, else None."""
        if obj is None:
            return None
        try:
            spec = obj.get("spec") or _EMPTY
            node = spec.get("nodeName")
            if not node or type(node) is not str:
                return None
            status = obj.get("status") or _EMPTY
            if status.get("phase") in TERMINAL_PHASES:
                return None
            demands = self._demands(spec)
            if not demands:
                return None
            meta = obj.get("metadata") or _EMPTY
            labels = meta.get("labels") or _EMPTY
            batch = self.queue_label in labels
            if not batch:
                for owner in meta.get("ownerReferences") or ():
                    if isinstance(owner, dict) and owner.get("kind") == "Job":
                        batch = True
                        break
            job = job_key(meta, labels) if batch else ""
            return PodRecord(
                sys.intern(node),
                demands,
                batch,
                job,
                _label(labels, ACCELERATOR),
                _label(labels, PROJECT),
            )
        except (AttributeError, TypeError):
            return None

    def _container_units(self, container: Mapping[str, Any]) -> dict[str, int] | None:
        """Units per catalog resource of one container: its limit, else its request."""
        resources = container.get("resources")
        if not resources:
            return None
        limits = resources.get("limits") or _EMPTY
        requests = resources.get("requests") or _EMPTY
        found = None
        for name, value in limits.items():
            if name in self._resources:
                found = found or {}
                found[name] = units(value)
        for name, value in requests.items():
            if name in self._resources and name not in limits:
                found = found or {}
                found[name] = units(value)
        return found

    def _demands(self, spec: Mapping[str, Any]) -> tuple[tuple[str, int], ...]:
        """The pod's effective units per resource, as the scheduler computes them: the sum
        over containers (plus sidecars) or the peak of the init phase, whichever is larger."""
        total: dict[str, int] = {}
        for container in spec.get("containers") or ():
            found = self._container_units(container)
            if found:
                for name, count in found.items():
                    total[name] = total.get(name, 0) + count
        init_containers = spec.get("initContainers")
        if init_containers:
            sidecars: dict[str, int] = {}
            peak: dict[str, int] = {}
            for container in init_containers:
                found = self._container_units(container)
                if not found:
                    continue
                restartable = container.get("restartPolicy") == "Always"
                for name, count in found.items():
                    if restartable:
                        sidecars[name] = sidecars.get(name, 0) + count
                        peak[name] = max(peak.get(name, 0), sidecars[name])
                    else:
                        peak[name] = max(peak.get(name, 0), sidecars.get(name, 0) + count)
            for name, count in sidecars.items():
                total[name] = total.get(name, 0) + count
            for name, count in peak.items():
                if count > total.get(name, 0):
                    total[name] = count
        if not total:
            return ()
        return tuple(sorted((name, count) for name, count in total.items() if count > 0))

    def slim_nodes(self, objs: Iterable[Mapping[str, Any]]) -> dict[str, NodeRecord]:
        """Records of a node list, by name (for `replace`, e.g. page by page after a relist)."""
        records = {}
        for obj in objs:
            parsed = self.node_record(obj)
            if parsed is not None:
                records[parsed[0]] = parsed[1]
        return records

    def slim_pods(self, objs: Iterable[Mapping[str, Any]]) -> dict[str, PodRecord]:
        """Records of the pods in a list that occupy accelerator units, by "namespace/name"."""
        records = {}
        for obj in objs:
            record = self.pod_record(obj)
            if record is not None:
                key = self.pod_key(obj)
                if key is not None:
                    records[key] = record
        return records
