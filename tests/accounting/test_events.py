"""Allocation events (pure): deterministic ids, every field checked, times read from pods."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from aiinfn_hub.accounting import events
from aiinfn_hub.accounting.events import Allocation, AllocationEvent, InvalidEvent

UID = "0b5e6a3c-7d8f-4e21-9a6b-5c4d3e2f1a0b"
T0 = datetime(2026, 12, 5, 8, 0, 0, tzinfo=UTC)


def allocation(**fields) -> Allocation:
    values = {
        "allocation": UID,
        "user": "alice",
        "project": "cms",
        "model": "a100",
        "kind": "notebook",
        "site": "",
        "units": 2,
        "cpu_millis": 4000,
    }
    return Allocation(**{**values, **fields})


def test_the_event_id_is_the_pod_uid_and_phase():
    start = AllocationEvent(allocation(), "start", T0)
    again = AllocationEvent(allocation(), "start", T0 + timedelta(seconds=5))
    assert start.event_id == again.event_id == f"{UID}:start"
    assert AllocationEvent(allocation(), "end", T0).event_id == f"{UID}:end"


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"user": "a" * 65}, "user is longer than 64"),
        ({"user": ""}, "user is empty"),
        ({"user": "al\u0456ce"}, "user is not printable ASCII"),
        ({"user": "al\nice"}, "user is not printable ASCII"),
        ({"project": "p" * 64}, "project is longer than 63"),
        ({"model": "m" * 64}, "model is longer than 63"),
        ({"allocation": "u" * 65}, "allocation is longer than 64"),
        ({"allocation": "../etc"}, "allocation must be a pod uid"),
        ({"kind": "training"}, "kind must be one of notebook, batch, offloaded"),
        ({"kind": "offloaded"}, "site is empty"),
        ({"kind": "offloaded", "site": "s" * 64}, "site is longer than 63"),
        ({"site": "infn-t1"}, "only an offloaded allocation has a site"),
        ({"units": -1}, "units must be a whole number from 0 to 1024"),
        ({"units": 1025}, "units must be a whole number from 0 to 1024"),
        ({"units": True}, "units must be a whole number"),
        ({"cpu_millis": 10_000_001}, "cpu_millis must be a whole number"),
        ({"model": "", "units": 1}, "units without an accelerator model"),
        ({"user": 7}, "user must be a string"),
    ],
)
def test_fields_out_of_bounds_are_refused(fields, message):
    with pytest.raises(InvalidEvent, match=message):
        allocation(**fields)


@pytest.mark.parametrize(
    "at,message",
    [
        (T0.replace(microsecond=1), "at must be a whole second"),
        (T0.replace(tzinfo=None), "at must be a datetime with a time zone"),
        ("2026-12-05T08:00:00Z", "at must be a datetime"),
    ],
)
def test_times_are_whole_seconds_with_a_zone(at, message):
    with pytest.raises(InvalidEvent, match=message):
        AllocationEvent(allocation(), "start", at)
    with pytest.raises(InvalidEvent, match="phase must be start or end"):
        AllocationEvent(allocation(), "begin", T0)


def test_offloaded_allocations_carry_their_site():
    offloaded = allocation(kind="offloaded", site="infn-t1", model="t4", units=1)
    assert (offloaded.kind, offloaded.site) == ("offloaded", "infn-t1")


def test_timestamps_are_read_in_utc_and_unreadable_ones_are_none():
    assert events.timestamp("2026-12-05T08:00:00Z") == T0
    assert events.timestamp("2026-12-05T09:00:00+01:00") == T0
    assert events.timestamp("2026-12-05T09:00:00+01:00").tzinfo == UTC
    for bad in ("2026-12-05T08:00:00", "yesterday", 1733385600, None, "2" * 41):
        assert events.timestamp(bad) is None


def pod(phase="Running", **extra) -> dict:
    obj = {
        "metadata": {
            "uid": UID,
            "name": "jupyter-alice",
            "namespace": "hub",
            "labels": {"aiinfn.infn.it/project": "cms"},
            "annotations": {"hub.jupyter.org/username": "alice"},
        },
        "spec": {
            "nodeName": "gpu-1",
            "containers": [
                {"name": "notebook", "resources": {"requests": {"cpu": "1500m"}}},
                {"name": "sidecar", "resources": {"limits": {"cpu": "1"}}},
                {"name": "bare"},
            ],
        },
        "status": {
            "phase": phase,
            "startTime": "2026-12-05T08:00:03Z",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "True",
                    "lastTransitionTime": "2026-12-05T08:00:00Z",
                },
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-05T08:00:09Z"},
            ],
        },
    }
    for key, value in extra.items():
        obj[key].update(value)
    return obj


def test_a_pods_allocation_is_read_with_what_the_inventory_decided():
    read = events.pod_allocation(
        pod(), model="a100", units=2, kind="notebook", projects={"cms": "CMS"}
    )
    assert read == Allocation(UID, "alice", "CMS", "a100", "notebook", "", 2, 2500)
    job = pod(metadata={"annotations": {"aiinfn.infn.it/owner-name": "bob"}})
    assert events.pod_allocation(job, model="", units=0, kind="batch").user == "bob"
    assert events.pod_allocation(job, model="", units=0, kind="batch").project == ""
    nameless = pod(metadata={"annotations": {}})
    with pytest.raises(InvalidEvent, match="user is empty"):
        events.pod_allocation(nameless, model="a100", units=1, kind="notebook")


def test_a_running_pod_has_started_at_its_binding():
    assert events.pod_times(pod()) == (T0, None)
    unbound = pod(status={"conditions": [], "startTime": None})
    assert events.pod_times(unbound) == (None, None)
    assert events.pod_events(allocation(), unbound) == []


def test_a_finished_pod_ends_when_its_last_container_finished():
    statuses = [
        {"state": {"terminated": {"finishedAt": "2026-12-05T09:01:01Z"}}},
        {"state": {"terminated": {"finishedAt": "2026-12-05T09:01:02Z"}}},
    ]
    done = pod("Succeeded", status={"containerStatuses": statuses})
    end = T0 + timedelta(hours=1, seconds=62)
    assert events.pod_times(done) == (T0, end)
    assert events.pod_events(allocation(), done) == [
        AllocationEvent(allocation(), "start", T0),
        AllocationEvent(allocation(), "end", end),
    ]


def test_a_failed_pod_without_container_times_ends_at_its_last_condition_change():
    assert events.pod_times(pod("Failed")) == (T0, T0 + timedelta(seconds=9))


def test_a_deleted_pod_ends_at_the_earlier_of_its_deadline_and_the_deletion_seen():
    seen = T0 + timedelta(minutes=10)
    deleting = pod(metadata={"deletionTimestamp": "2026-12-05T08:05:00Z"})
    assert events.pod_times(deleting) == (T0, None)  # still in its grace period
    assert events.pod_times(deleting, seen) == (T0, T0 + timedelta(minutes=5))
    assert events.pod_times(pod(), seen) == (T0, seen)
    early = datetime(2026, 12, 5, 8, 30, tzinfo=timezone(timedelta(hours=1)))
    assert events.pod_times(pod(), early) == (T0, T0)  # never before its start


def test_cpu_requests_are_summed_in_millicores_and_bounded():
    assert events.cpu_millis({"containers": [{"resources": {"requests": {"cpu": "0.25"}}}]}) == 250
    assert events.cpu_millis({"containers": [{"resources": {"requests": {"cpu": "lots"}}}]}) == 0
    huge = {"containers": [{"resources": {"requests": {"cpu": "1M"}}}]}
    assert events.cpu_millis(huge) == events.MAX_CPU_MILLIS
