"""The feed (accounting/feed.py) on hand-built API dicts: which pods count, what each holds
(as the metrics count it), one start per pod per watch, every start again at a relist with a
reconciliation, and the end of a pod the watch sees go."""

from __future__ import annotations

from datetime import UTC, datetime

from aiinfn_hub import catalog
from aiinfn_hub.accounting.events import Allocation, AllocationEvent
from aiinfn_hub.accounting.feed import AccountingFeed
from aiinfn_hub.inventory import Inventory
from tests.unit.test_inventory import GPU, T4, VIRTUAL_TAINT, node, pod

CATALOG = catalog.load(catalog.default_path())
T0 = datetime(2026, 12, 5, 8, 0, 0, tzinfo=UTC)
SEEN = datetime(2026, 12, 5, 9, 0, 0, tzinfo=UTC)
SCHEDULED = {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-12-05T08:00:00Z"}


class Sink:
    def __init__(self) -> None:
        self.events: list[AllocationEvent] = []
        self.reconciles: list[tuple[set[str], datetime]] = []

    def submit(self, event: AllocationEvent) -> bool:
        self.events.append(event)
        return True

    def reconcile(self, live, at: datetime) -> None:
        self.reconciles.append((set(live()), at))


def owned(obj: dict, uid: str, user: str = "alice", *, job: bool = False, **labels) -> dict:
    """A pod made for `user` (the hub's annotation, or the job service's), bound at T0."""
    key = "aiinfn.infn.it/owner-name" if job else "hub.jupyter.org/username"
    obj["metadata"].update(uid=uid, annotations={key: user})
    obj["metadata"]["labels"].update(labels)
    obj["status"]["conditions"] = [SCHEDULED]
    return obj


def feed() -> tuple[AccountingFeed, Sink]:
    sink = Sink()
    accounting = AccountingFeed(
        Inventory(CATALOG.accelerators), sink, {"cms-ml": "cms-ml"}, clock=lambda: SEEN
    )
    remote = node(
        "vk",
        None,
        {GPU: "16"},
        taints=[VIRTUAL_TAINT],
        labels={"type": "virtual-kubelet", "virtual-node.interlink/site": "infn-t1"},
    )
    accounting.node_page([node("t4-a", T4, {GPU: "8"}), remote])
    accounting.nodes_listed()
    return accounting, sink


def listed() -> list[dict]:
    return [
        owned(pod("nb", "t4-a", {GPU: "2"}), "u-nb"),
        owned(pod("cpu", "t4-a", job=True), "u-cpu", "bob", job=True),
        owned(
            pod("remote", "vk", {GPU: "3"}, job=True),
            "u-remote",
            job=True,
            **{"aiinfn.infn.it/accelerator": "t4", "aiinfn.infn.it/project": "cms-ml"},
        ),
        pod("system", "t4-a", {GPU: "1"}),  # nobody's: not accounted
        owned(pod("pending", None, {GPU: "1"}), "u-pending"),  # not bound: not yet
    ]


def test_a_relist_submits_every_listed_pods_start_and_asks_for_a_reconciliation():
    accounting, sink = feed()
    accounting.begin_pods()
    accounting.pod_page(listed())
    accounting.pods_listed()
    assert sink.events == [
        AllocationEvent(
            Allocation("u-nb", "alice", "", "t4", "notebook", "", 2, 1000), "start", T0
        ),
        AllocationEvent(Allocation("u-cpu", "bob", "", "", "batch", "", 0, 1000), "start", T0),
        AllocationEvent(
            Allocation("u-remote", "alice", "cms-ml", "t4", "offloaded", "infn-t1", 3, 1000),
            "start",
            T0,
        ),
    ]
    assert sink.reconciles == [({"u-nb", "u-cpu", "u-remote"}, SEEN)]
    # The next relist submits them again (same ids: the ledger stores them once).
    accounting.begin_pods()
    accounting.pod_page(listed()[:1])
    accounting.pods_listed()
    assert sink.events[-1].event_id == "u-nb:start"
    assert sink.reconciles[-1] == ({"u-nb"}, SEEN)


def finished(name: str, uid: str, at: str = "2026-12-05T08:20:07Z") -> dict:
    """A pod of alice's that has succeeded, its container finished `at`."""
    obj = owned(pod(name, "t4-a", {GPU: "1"}, phase="Succeeded"), uid)
    obj["status"]["containerStatuses"] = [{"state": {"terminated": {"finishedAt": at}}}]
    return obj


def test_a_pods_start_is_submitted_once_and_its_end_at_its_containers_finish():
    accounting, sink = feed()
    running = owned(pod("nb", "t4-a", {GPU: "1"}), "u-1")
    accounting.pod_event("ADDED", running)
    accounting.pod_event("MODIFIED", running)
    assert [e.event_id for e in sink.events] == ["u-1:start"]
    # Watched with finished pods (hub_start.ACCOUNTED_PODS), its finish is a MODIFIED event.
    accounting.pod_event("MODIFIED", finished("nb", "u-1"))
    end = sink.events[-1]
    assert (end.event_id, end.at, end.allocation.units) == (
        "u-1:end",
        T0.replace(minute=20, second=7),
        1,
    )
    # Its later changes and its removal are no news.
    accounting.pod_event("MODIFIED", finished("nb", "u-1"))
    accounting.pod_event("DELETED", finished("nb", "u-1"))
    assert [e.event_id for e in sink.events] == ["u-1:start", "u-1:end"]
    assert (accounting.live, accounting.ended) == ({}, set())


def test_a_finished_pod_in_a_relist_has_its_real_end():
    accounting, sink = feed()
    accounting.begin_pods()
    accounting.pod_page([finished("done", "u-done")])
    accounting.pods_listed()
    assert [(e.event_id, e.at) for e in sink.events] == [
        ("u-done:start", T0),
        ("u-done:end", T0.replace(minute=20, second=7)),
    ]
    accounting.pod_event("DELETED", finished("done", "u-done"))
    assert len(sink.events) == 2


def test_a_pod_whose_finish_the_watch_missed_ends_at_its_containers_finish():
    """Watched without finished pods, a finish arrives as a DELETED event; when its object
    holds the containers' finish, that is the end."""
    accounting, sink = feed()
    accounting.pod_event("ADDED", owned(pod("nb", "t4-a", {GPU: "1"}), "u-1"))
    accounting.pod_event("DELETED", finished("nb", "u-1"))
    assert sink.events[-1].at == T0.replace(minute=20, second=7)
    # A new pod of the same name is a new allocation.
    accounting.pod_event("ADDED", owned(pod("nb", "t4-a", {GPU: "1"}), "u-2"))
    assert sink.events[-1].event_id == "u-2:start"


def test_a_pod_deleted_while_running_ends_at_its_deadline_or_when_seen():
    accounting, sink = feed()
    running = owned(pod("nb", "t4-a", {GPU: "1"}), "u-1")
    accounting.pod_event("ADDED", running)
    running["metadata"]["deletionTimestamp"] = "2026-12-05T08:30:00Z"
    accounting.pod_event("DELETED", running)
    assert sink.events[-1].at == T0.replace(minute=30)


def test_a_pod_with_fields_out_of_bounds_is_logged_not_counted(caplog):
    accounting, sink = feed()
    accounting.pod_event("ADDED", owned(pod("nb", "t4-a", {GPU: "1"}), "u-1", "u" * 65))
    assert sink.events == []
    assert "users/nb not counted: user is longer than 64" in caplog.text


def test_a_pod_on_a_node_not_seen_yet_counts_its_accelerator_label():
    accounting, sink = feed()
    labels = {"aiinfn.infn.it/accelerator": "t4"}
    accounting.pod_event("ADDED", owned(pod("nb", "new-node", {GPU: "2"}), "u-1", **labels))
    assert (sink.events[0].allocation.model, sink.events[0].allocation.units) == ("t4", 2)
