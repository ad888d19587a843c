"""Allocation events: the start and the end of one pod's hold on accelerators and CPUs.

An event's id is its pod's uid and its phase ("<uid>:start", "<uid>:end"), and its time comes
from the pod itself (when it was bound, when its containers finished), never from when the hub
saw it: a hub that restarts and lists the same pods again makes the same events, which the
ledger stores once. Every field is checked here, before any SQL: bounded lengths, printable
ASCII, a known kind, whole seconds in UTC.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from aiinfn_hub import quantities
from aiinfn_hub.labels import HUB_USERNAME, OWNER_NAME, PROJECT

Phase = Literal["start", "end"]
Kind = Literal["notebook", "batch", "offloaded"]
PHASES: tuple[Phase, ...] = ("start", "end")
KINDS: tuple[Kind, ...] = ("notebook", "batch", "offloaded")

# Column sizes of the ledger (migrations/versions/0001_events.py repeats them, as migrations
# must not change when this module does; a test compares the two).
MAX_ALLOCATION = 64  # a pod uid is 36
MAX_USER = 64  # names.MAX_USERNAME_LENGTH
MAX_NAME = 63  # a project, accelerator model or site: catalog keys and label values
MAX_UNITS = 1024
MAX_CPU_MILLIS = 10_000_000  # 10,000 cores

_ALLOCATION = re.compile(r"[a-z0-9][a-z0-9-]*")
_TERMINAL = frozenset({"Succeeded", "Failed"})
_EMPTY: Mapping[str, Any] = {}


class InvalidEvent(ValueError):
    """An event field out of bounds; the message names the field (log detail, not user text)."""


def _text(value: object, field: str, limit: int, *, required: bool) -> str:
    if type(value) is not str:
        raise InvalidEvent(f"{field} must be a string")
    if len(value) > limit:
        raise InvalidEvent(f"{field} is longer than {limit} characters")
    if required and not value:
        raise InvalidEvent(f"{field} is empty")
    if not (value.isascii() and value.isprintable()):
        raise InvalidEvent(f"{field} is not printable ASCII")
    return value


def _count(value: object, field: str, limit: int) -> int:
    if type(value) is not int or not 0 <= value <= limit:
        raise InvalidEvent(f"{field} must be a whole number from 0 to {limit}")
    return value


@dataclass(frozen=True)
class Allocation:
    """What one pod holds, and for whom: the part of an event that its start and end share.
    `model` is "" for a pod holding no accelerator (CPU-hours only), `project` "" for none."""

    allocation: str  # the pod's uid
    user: str
    project: str
    model: str
    kind: Kind
    site: str  # the remote site of an offloaded pod, else ""
    units: int
    cpu_millis: int

    def __post_init__(self) -> None:
        _text(self.allocation, "allocation", MAX_ALLOCATION, required=True)
        if not _ALLOCATION.fullmatch(self.allocation):
            raise InvalidEvent("allocation must be a pod uid (lowercase letters, digits, '-')")
        _text(self.user, "user", MAX_USER, required=True)
        _text(self.project, "project", MAX_NAME, required=False)
        _text(self.model, "model", MAX_NAME, required=False)
        if self.kind not in KINDS:
            raise InvalidEvent(f"kind must be one of {', '.join(KINDS)}")
        _text(self.site, "site", MAX_NAME, required=self.kind == "offloaded")
        if self.site and self.kind != "offloaded":
            raise InvalidEvent("only an offloaded allocation has a site")
        _count(self.units, "units", MAX_UNITS)
        _count(self.cpu_millis, "cpu_millis", MAX_CPU_MILLIS)
        if self.units and not self.model:
            raise InvalidEvent("units without an accelerator model")


@dataclass(frozen=True)
class AllocationEvent:
    """The start or end of an allocation at a whole second (UTC)."""

    allocation: Allocation
    phase: Phase
    at: datetime

    def __post_init__(self) -> None:
        if not isinstance(self.allocation, Allocation):
            raise InvalidEvent("allocation must be an Allocation")
        if self.phase not in PHASES:
            raise InvalidEvent("phase must be start or end")
        if type(self.at) is not datetime or self.at.utcoffset() is None:
            raise InvalidEvent("at must be a datetime with a time zone")
        if self.at.microsecond:
            raise InvalidEvent("at must be a whole second")

    @property
    def event_id(self) -> str:
        """Unique and deterministic: the same pod phase always has the same id."""
        return f"{self.allocation.allocation}:{self.phase}"


def timestamp(value: object) -> datetime | None:
    """A Kubernetes time ("2026-12-05T08:00:00Z", whole seconds) in UTC; None if unreadable."""
    if type(value) is not str or len(value) > 40:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.utcoffset() is None:
        return None
    return parsed.astimezone(UTC).replace(microsecond=0)


def cpu_millis(spec: Mapping[str, Any]) -> int:
    """Millicores a pod's containers request (limits where no request), summed; 0 if unreadable.
    Init containers are not counted: they run before the allocation's containers."""
    total = 0
    for container in spec.get("containers") or ():
        resources = (container.get("resources") if isinstance(container, dict) else None) or {}
        value = (resources.get("requests") or {}).get("cpu") or (resources.get("limits") or {}).get(
            "cpu"
        )
        if value is None:
            continue
        try:
            total += int(quantities.parse(value) * 1000)
        except ValueError:
            continue
    return min(max(total, 0), MAX_CPU_MILLIS)


def pod_allocation(
    obj: Mapping[str, Any],
    *,
    model: str,
    units: int,
    kind: Kind,
    site: str = "",
    projects: Mapping[str, str] = _EMPTY,
) -> Allocation:
    """The allocation of a Pod dict. The caller says what the inventory decided (its model,
    units and kind, the site of its virtual node); `projects` maps project label values to
    catalog keys (an unknown label counts for no project). Raises InvalidEvent."""
    meta = obj.get("metadata") or _EMPTY
    annotations = meta.get("annotations") or _EMPTY
    labels = meta.get("labels") or _EMPTY
    user = annotations.get(HUB_USERNAME) or annotations.get(OWNER_NAME) or ""
    return Allocation(
        allocation=meta.get("uid") or "",
        user=user,
        project=projects.get(labels.get(PROJECT) or "", ""),
        model=model,
        kind=kind,
        site=site,
        units=units,
        cpu_millis=cpu_millis(obj.get("spec") or _EMPTY),
    )


def _finished(status: Mapping[str, Any]) -> datetime | None:
    """When the last container finished, if every container has (else None)."""
    finished = []
    for container in status.get("containerStatuses") or ():
        terminated = ((container.get("state") or {}) if isinstance(container, dict) else {}).get(
            "terminated"
        )
        at = timestamp(terminated.get("finishedAt")) if isinstance(terminated, dict) else None
        if at is None:
            return None
        finished.append(at)
    return max(finished) if finished else None


def pod_times(
    obj: Mapping[str, Any], deleted_at: datetime | None = None
) -> tuple[datetime | None, datetime | None]:
    """(start, end) of a pod's allocation. Start: bound (PodScheduled), else started. End, once
    its phase is terminal or the watch saw it deleted (at `deleted_at`): its last container's
    finish, else its last condition change (terminal) or the earlier of its deletion deadline
    and `deleted_at`. A pod still in its grace period has not ended. None where unknown."""
    status = obj.get("status") or _EMPTY
    start = None
    changes = []
    for condition in status.get("conditions") or ():
        if not isinstance(condition, dict):
            continue
        changed = timestamp(condition.get("lastTransitionTime"))
        if changed is not None:
            changes.append(changed)
        if condition.get("type") == "PodScheduled" and condition.get("status") == "True":
            start = changed
    start = start or timestamp(status.get("startTime"))
    end = None
    if status.get("phase") in _TERMINAL:
        end = _finished(status) or (max(changes) if changes else None) or deleted_at
    elif deleted_at is not None:
        deadline = timestamp((obj.get("metadata") or _EMPTY).get("deletionTimestamp"))
        end = _finished(status) or min(deadline or deleted_at, deleted_at)
    if start is not None and end is not None and end < start:
        end = start
    return start, end


def pod_events(
    allocation: Allocation, obj: Mapping[str, Any], deleted_at: datetime | None = None
) -> list[AllocationEvent]:
    """The events a pod's state implies now: none before it is bound, a start, then an end.
    `deleted_at` (whole seconds) for a pod the watch saw deleted."""
    start, end = pod_times(obj, deleted_at)
    if start is None:
        return []
    events = [AllocationEvent(allocation, "start", start)]
    if end is not None:
        events.append(AllocationEvent(allocation, "end", end))
    return events
