"""The inventory's counting core on hand-built API dicts, and a property test that the counts
kept per event always equal a recount from scratch."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aiinfn_hub import catalog
from aiinfn_hub.inventory import Counts, Inventory
from aiinfn_hub.inventory_records import units

ACCELERATORS = catalog.load(catalog.default_path()).accelerators
T4, A100, A30, RTX = "Tesla-T4", "NVIDIA-A100-80GB-PCIe", "NVIDIA-A30", "Quadro-RTX-5000"
GPU = "nvidia.com/gpu"
MIG_1G, MIG_2G, MIG_3G = (
    "nvidia.com/mig-1g.10gb",
    "nvidia.com/mig-2g.20gb",
    "nvidia.com/mig-3g.40gb",
)
ZERO = Counts(0, 0, 0, 0, 0)


def node(
    name: str,
    product: str | None = None,
    resources: dict[str, str] | None = None,
    *,
    ready: str | None = "True",
    unschedulable: bool = False,
    taints: list[dict] | None = None,
    labels: dict[str, str] | None = None,
) -> dict:
    all_labels = {"kubernetes.io/hostname": name, **(labels or {})}
    if product:
        all_labels["nvidia.com/gpu.product"] = product
    obj: dict[str, Any] = {
        "metadata": {"name": name, "labels": all_labels, "resourceVersion": "1"},
        "spec": {"taints": taints or []},
        "status": {
            "allocatable": {"cpu": "32", "memory": "256Gi", **(resources or {})},
            "conditions": [],
        },
    }
    if unschedulable:
        obj["spec"]["unschedulable"] = True
    if ready is not None:
        obj["status"]["conditions"] = [
            {"type": "MemoryPressure", "status": "False"},
            {"type": "Ready", "status": ready},
        ]
    return obj


def pod(
    name: str,
    node_name: str | None,
    limits: dict[str, str] | None = None,
    *,
    requests: dict[str, str] | None = None,
    phase: str | None = "Running",
    namespace: str = "users",
    queue: str | None = None,
    job: bool = False,
    init: list[dict] | None = None,
    job_name: str | None = None,
    job_label: str = "batch.kubernetes.io/job-name",
) -> dict:
    resources: dict[str, Any] = {"requests": {"cpu": "1", **(requests or {})}}
    if limits:
        resources["limits"] = dict(limits)
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": {}}
    if queue:
        meta["labels"]["kueue.x-k8s.io/queue-name"] = queue
    if job:
        meta["ownerReferences"] = [
            {"apiVersion": "batch/v1", "kind": "Job", "name": job_name or "j", "uid": "u"}
        ]
    if job_name:
        meta["labels"][job_label] = job_name
    obj: dict[str, Any] = {
        "metadata": meta,
        "spec": {"containers": [{"name": "main", "resources": resources}]},
        "status": {},
    }
    if node_name:
        obj["spec"]["nodeName"] = node_name
    if phase:
        obj["status"]["phase"] = phase
    if init:
        obj["spec"]["initContainers"] = init
    return obj


RESERVED_CMS = {"key": "reserved", "value": "cms-ml", "effect": "NoSchedule"}
VIRTUAL_TAINT = {
    "key": "virtual-node.interlink/no-schedule",
    "value": "true",
    "effect": "NoSchedule",
}


def farm() -> tuple[list[dict], list[dict]]:
    nodes = [
        node("t4-node", T4, {GPU: "8"}),
        node("a100-node", A100, {GPU: "2"}),
        node(
            "mig-node",
            A100,
            {MIG_1G: "2", MIG_2G: "1", MIG_3G: "1"},
            labels={"nvidia.com/mig.strategy": "mixed"},
        ),
        node("a30-cordoned", A30, {GPU: "1"}, unschedulable=True),
        node("rtx-notready", RTX, {GPU: "5"}, ready="False"),
        node(
            "virtual", T4, {GPU: "16"}, labels={"type": "virtual-kubelet"}, taints=[VIRTUAL_TAINT]
        ),
        node("t4-cms", T4, {GPU: "4"}, taints=[RESERVED_CMS]),
        node("t4-nobody", T4, {GPU: "2"}, taints=[{"key": "reserved", "effect": "NoSchedule"}]),
    ]
    pods = [
        pod("notebook-a100", "a100-node", {GPU: "1"}),
        pod("job-a100", "a100-node", {GPU: "1"}, namespace="batch", job=True),
        pod("mig-user", "mig-node", requests={MIG_1G: "1"}),
        pod("queued-t4", "t4-node", {GPU: "2"}, phase="Pending", namespace="batch", queue="local"),
        pod(
            "init-t4",
            "t4-node",
            {GPU: "1"},
            init=[{"name": "warmup", "resources": {"limits": {GPU: "3"}}}],
        ),
        pod("done-t4", "t4-node", {GPU: "2"}, phase="Succeeded"),
        pod("failed-t4", "t4-node", {GPU: "2"}, phase="Failed"),
        pod("widget-t4", "t4-node", {"example.com/widget": "1"}),
        pod("cpu-only", "t4-node"),
        pod("unbound", None, {GPU: "1"}, phase="Pending"),
        pod("cms-notebook", "t4-cms", {GPU: "1"}, namespace="cms"),
        pod("on-cordoned", "a30-cordoned", {GPU: "1"}),
        pod("offloaded", "virtual", {GPU: "4"}, queue="remote"),
    ]
    return nodes, pods


EXPECTED = {
    "t4": Counts(total=8, notebooks=3, batch=2, free=3, free_if_preempted=5, batch_jobs=1),
    "rtx5000": ZERO,
    "a100": Counts(total=2, notebooks=1, batch=1, free=0, free_if_preempted=1, batch_jobs=1),
    "a30": ZERO,
    "a100-mig-1g-10gb": Counts(total=2, notebooks=1, batch=0, free=1, free_if_preempted=1),
    "a100-mig-2g-20gb": Counts(total=1, notebooks=0, batch=0, free=1, free_if_preempted=1),
    "a100-mig-3g-40gb": Counts(total=1, notebooks=0, batch=0, free=1, free_if_preempted=1),
    "u50": ZERO,
    "u250": ZERO,
    "v70": ZERO,
}


def built() -> Inventory:
    inventory = Inventory(ACCELERATORS)
    nodes, pods = farm()
    for obj in nodes:
        inventory.apply_node("ADDED", obj)
    for obj in pods:
        inventory.apply_pod("ADDED", obj)
    return inventory


def test_snapshot_of_a_small_farm_is_literal():
    inventory = built()
    assert inventory.snapshot() == EXPECTED
    assert inventory.snapshot() == inventory.recount()


def test_a_reserved_node_counts_only_for_its_group():
    inventory = built()
    assert inventory.snapshot(["atlas"])["t4"] == EXPECTED["t4"]
    assert inventory.snapshot(["cms-ml"])["t4"] == Counts(
        total=12, notebooks=4, batch=2, free=6, free_if_preempted=8, batch_jobs=1
    )
    assert inventory.snapshot(["cms-ml", "cms-ml"]) == inventory.snapshot(
        ["cms-ml"]
    )  # a group counts once
    assert inventory.snapshot("cms-ml") == inventory.snapshot(["cms-ml"])
    assert inventory.snapshot(["cms-ml"]) == inventory.recount(["cms-ml"])
    # A reservation without a value is for no group at all.
    assert ("t4", "t4-nobody") not in inventory.per_node(["cms-ml", "atlas"])


def test_per_node_and_largest_free_block():
    inventory = built()
    assert inventory.per_node() == {
        ("t4", "t4-node"): Counts(8, 3, 2, 3, 5, 1),
        ("a100", "a100-node"): Counts(2, 1, 1, 0, 1, 1),
        ("a100-mig-1g-10gb", "mig-node"): Counts(2, 1, 0, 1, 1),
        ("a100-mig-2g-20gb", "mig-node"): Counts(1, 0, 0, 1, 1),
        ("a100-mig-3g-40gb", "mig-node"): Counts(1, 0, 0, 1, 1),
    }
    assert inventory.per_node(["cms-ml"])[("t4", "t4-cms")] == Counts(4, 1, 0, 3, 3)
    assert inventory.largest_free_block("t4") == 3
    assert inventory.largest_free_block("t4", preempt=True) == 5
    assert inventory.largest_free_block("a100") == 0
    assert inventory.largest_free_block("a100", preempt=True) == 1
    assert inventory.largest_free_block("a30") == 0
    assert inventory.largest_free_block("no-such-accelerator") == 0
    # Free units add up over nodes; the largest block is what one node has.
    inventory.apply_pod("DELETED", pod("queued-t4", None, namespace="batch"))
    assert inventory.snapshot(["cms-ml"])["t4"].free == 8
    assert inventory.largest_free_block("t4", ["cms-ml"]) == 5
    inventory.apply_pod("ADDED", pod("more", "t4-node", {GPU: "2"}))
    assert inventory.largest_free_block("t4", ["cms-ml"]) == 3


def test_a_pod_seen_before_its_node_counts_when_the_node_appears():
    inventory = Inventory(ACCELERATORS)
    inventory.apply_pod("ADDED", pod("early", "late-rtx", {GPU: "1"}))
    assert inventory.snapshot()["rtx5000"] == ZERO
    assert inventory.pod_count == 1
    inventory.apply_node("ADDED", node("late-rtx", RTX, {GPU: "2"}))
    assert inventory.snapshot()["rtx5000"] == Counts(2, 1, 0, 1, 1)
    # The node leaves: its pods stop counting; it comes back: they count again.
    inventory.apply_node("DELETED", {"metadata": {"name": "late-rtx"}})
    assert inventory.snapshot()["rtx5000"] == ZERO
    inventory.apply_node("ADDED", node("late-rtx", RTX, {GPU: "2"}))
    assert inventory.snapshot()["rtx5000"] == Counts(2, 1, 0, 1, 1)


def test_nodes_flipping_ready_cordoned_and_reserved():
    inventory = built()
    assert inventory.apply_node("MODIFIED", node("t4-node", T4, {GPU: "8"}, ready="Unknown"))
    assert inventory.snapshot()["t4"] == ZERO
    # NotReady to cordoned: not capacity either way, so nothing changes.
    assert not inventory.apply_node("MODIFIED", node("t4-node", T4, {GPU: "8"}, unschedulable=True))
    assert inventory.snapshot()["t4"] == ZERO
    assert inventory.apply_node("MODIFIED", node("t4-node", T4, {GPU: "8"}, taints=[RESERVED_CMS]))
    assert inventory.snapshot()["t4"] == ZERO
    assert inventory.snapshot(["cms-ml"])["t4"] == Counts(12, 4, 2, 6, 8, 1)
    assert inventory.apply_node("MODIFIED", node("t4-node", T4, {GPU: "8"}))
    assert inventory.snapshot() == EXPECTED
    # A heartbeat that changes nothing the inventory keeps is a no-op.
    assert not inventory.apply_node("MODIFIED", node("t4-node", T4, {GPU: "8"}))
    # The device plugin publishes fewer GPUs: capacity shrinks, usage stays, free clamps at 0.
    assert inventory.apply_node("MODIFIED", node("t4-node", T4, {GPU: "4"}))
    assert inventory.snapshot()["t4"] == Counts(
        total=4, notebooks=3, batch=2, free=0, free_if_preempted=1, batch_jobs=1
    )
    assert inventory.snapshot() == inventory.recount()


def test_pod_lifecycle_and_unchanged_events():
    inventory = built()
    assert not inventory.apply_pod("MODIFIED", pod("notebook-a100", "a100-node", {GPU: "1"}))
    assert inventory.apply_pod(
        "MODIFIED",
        pod("job-a100", "a100-node", {GPU: "1"}, phase="Succeeded", namespace="batch", job=True),
    )
    assert inventory.snapshot()["a100"] == Counts(2, 1, 0, 1, 1)
    assert inventory.apply_pod("DELETED", pod("notebook-a100", "a100-node", {GPU: "1"}))
    assert inventory.snapshot()["a100"] == Counts(2, 0, 0, 2, 2)
    assert not inventory.apply_pod("DELETED", pod("never-seen", "a100-node", {GPU: "1"}))
    assert not inventory.apply_node("DELETED", node("never-seen", A100, {GPU: "1"}))
    # A terminating pod still counts until its DELETED event.
    terminating = pod("leaving", "a100-node", {GPU: "2"})
    terminating["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    inventory.apply_pod("ADDED", terminating)
    assert inventory.snapshot()["a100"].notebooks == 2
    assert not inventory.apply_pod("BOOKMARK", pod("leaving", None))


def test_reset_rebuilds_from_lists():
    inventory = built()
    nodes, pods = farm()
    inventory.reset(nodes=[n for n in nodes if n["metadata"]["name"] != "a100-node"], pods=pods)
    assert inventory.snapshot()["a100"] == ZERO
    inventory.reset(nodes=nodes)  # pods kept
    assert inventory.snapshot() == EXPECTED
    inventory.reset(pods=[])
    assert inventory.snapshot()["t4"] == Counts(8, 0, 0, 8, 8)
    assert inventory.pod_count == 0 and inventory.node_count == len(nodes)


def jobs_farm() -> Inventory:
    """Two T4 nodes and a cms-ml one; batch pods of Jobs "train" (3 pods over both plain nodes),
    "sweep" (the older job-name label; on the plain and the reserved node), a bare Kueue pod,
    and "train" again in another namespace (another Job) holding a MIG slice and a T4."""
    inventory = Inventory(ACCELERATORS)
    inventory.apply_node("ADDED", node("t4-a", T4, {GPU: "4"}))
    inventory.apply_node("ADDED", node("t4-b", T4, {GPU: "4"}))
    inventory.apply_node("ADDED", node("t4-cms", T4, {GPU: "4"}, taints=[RESERVED_CMS]))
    inventory.apply_node("ADDED", node("mig", A100, {MIG_1G: "2", GPU: "1"}))
    batch = {"namespace": "batch", "job": True}
    pods = [
        pod("train-0", "t4-a", {GPU: "1"}, job_name="train", **batch),
        pod("train-1", "t4-a", {GPU: "1"}, job_name="train", **batch),
        pod("train-2", "t4-b", {GPU: "1"}, job_name="train", **batch),
        pod("sweep-0", "t4-b", {GPU: "1"}, job_name="sweep", job_label="job-name", **batch),
        pod("sweep-1", "t4-cms", {GPU: "2"}, job_name="sweep", job_label="job-name", **batch),
        pod("bare", "t4-a", {GPU: "1"}, namespace="batch", queue="local"),
        pod("notebook", "t4-b", {GPU: "1"}),
        pod("other-train", "mig", {MIG_1G: "1"}, namespace="other", queue="q", job_name="train"),
    ]
    for obj in pods:
        inventory.apply_pod("ADDED", obj)
    return inventory


def test_batch_jobs_are_distinct_jobs_not_pods():
    inventory = jobs_farm()
    # Unreserved T4s: train (3 pods), sweep (1 of its 2), bare: 3 jobs on 5 batch units.
    assert inventory.snapshot()["t4"] == Counts(8, 1, 5, 2, 7, 3)
    # cms-ml also sees its node: sweep's second pod is the same job, counted once.
    assert inventory.snapshot(["cms-ml"])["t4"] == Counts(12, 1, 7, 4, 11, 3)
    assert inventory.snapshot()["a100-mig-1g-10gb"] == Counts(2, 0, 1, 1, 2, 1)
    assert inventory.per_node(["cms-ml"]) == {
        ("t4", "t4-a"): Counts(4, 0, 3, 1, 4, 2),
        ("t4", "t4-b"): Counts(4, 1, 2, 1, 3, 2),
        ("t4", "t4-cms"): Counts(4, 0, 2, 2, 4, 1),
        ("a100-mig-1g-10gb", "mig"): Counts(2, 0, 1, 1, 2, 1),
        ("a100", "mig"): Counts(1, 0, 0, 1, 1, 0),
    }
    # A job holding two accelerators counts for each; "train" in another namespace is another.
    inventory.apply_pod(
        "MODIFIED",
        pod("other-train", "mig", {MIG_1G: "1", GPU: "1"}, namespace="other", job_name="train"),
    )
    assert inventory.snapshot()["a100"].batch_jobs == 0  # not batch any more: no queue, no owner
    inventory.apply_pod(
        "MODIFIED",
        pod(
            "other-train",
            "mig",
            {MIG_1G: "1", GPU: "1"},
            namespace="other",
            job=True,
            job_name="train",
        ),
    )
    assert inventory.snapshot()["a100"] == Counts(1, 0, 1, 0, 1, 1)
    assert inventory.snapshot()["a100-mig-1g-10gb"].batch_jobs == 1
    for groups in GROUP_SETS:
        assert inventory.snapshot(groups) == inventory.recount(groups)


def test_batch_jobs_follow_nodes_and_pods_and_leave_nothing_behind():
    inventory = jobs_farm()
    inventory.apply_node("MODIFIED", node("t4-a", T4, {GPU: "4"}, unschedulable=True))
    assert inventory.snapshot()["t4"] == Counts(4, 1, 2, 1, 3, 2)  # train (t4-b), sweep
    inventory.apply_pod("DELETED", pod("train-2", None, namespace="batch"))
    assert inventory.snapshot()["t4"].batch_jobs == 1
    inventory.apply_node("MODIFIED", node("t4-a", T4, {GPU: "4"}))
    assert inventory.snapshot()["t4"].batch_jobs == 3  # train's pods on t4-a, bare
    assert inventory.snapshot() == inventory.recount()
    inventory.reset(pods=[])
    assert all(c.batch_jobs == 0 for c in inventory.snapshot(["cms-ml"]).values())
    # Bounded: a job leaves its bucket with its last pod.
    jobs = jobs_farm()
    for name in ("train-0", "train-1", "train-2", "sweep-0", "sweep-1", "bare"):
        jobs.apply_pod("DELETED", pod(name, None, namespace="batch"))
    jobs.apply_pod("DELETED", pod("other-train", None, namespace="other"))
    assert not any(b.jobs for buckets in jobs._buckets.values() for b in buckets.values())


def test_sidecars_add_up_and_init_containers_peak():
    inventory = Inventory(ACCELERATORS)
    inventory.apply_node("ADDED", node("big", T4, {GPU: "16"}))
    sidecar = {"name": "proxy", "restartPolicy": "Always", "resources": {"limits": {GPU: "1"}}}
    init = {"name": "load", "resources": {"requests": {GPU: "4"}}}
    inventory.apply_pod("ADDED", pod("p", "big", {GPU: "2"}, init=[sidecar, init]))
    # Containers 2 + sidecar 1 = 3; init phase peaks at sidecar 1 + init 4 = 5.
    assert inventory.snapshot()["t4"].notebooks == 5
    inventory.apply_pod("MODIFIED", pod("p", "big", {GPU: "2"}, init=[init, sidecar]))
    assert inventory.snapshot()["t4"].notebooks == 4
    two = pod("q", "big", {GPU: "1"})
    two["spec"]["containers"].append(
        {"name": "second", "resources": {"limits": {GPU: "2"}, "requests": {GPU: "9"}}}
    )
    inventory.apply_pod("ADDED", two)
    assert inventory.snapshot()["t4"].notebooks == 7  # limits win over requests


def test_an_accelerator_without_labels_does_not_shadow_a_product():
    fallback = catalog.Accelerator(key="any-gpu", display_name="Any GPU", kind="gpu", resource=GPU)
    accelerators = {"any-gpu": fallback, **ACCELERATORS}
    inventory = Inventory(accelerators)
    inventory.apply_node("ADDED", node("t4-node", T4, {GPU: "8"}))
    inventory.apply_node("ADDED", node("mystery", "Some-New-GPU", {GPU: "2"}))
    snapshot = inventory.snapshot()
    assert snapshot["t4"].total == 8 and snapshot["any-gpu"].total == 2
    assert "cpu" not in snapshot


@pytest.mark.parametrize(
    "obj",
    [
        None,
        {},
        [],
        "node",
        {"metadata": None},
        {"metadata": {"name": 7}},
        {"metadata": {"name": ""}},
        {"metadata": {"name": "x"}, "spec": "junk", "status": []},
        {"metadata": {"name": "x", "labels": ["a"]}, "status": {"allocatable": {GPU: "1"}}},
        {
            "metadata": {"name": "x"},
            "spec": {"taints": [None, {"key": 3}, {"key": "reserved"}]},
            "status": {
                "conditions": [None, "Ready", {"type": "Ready"}],
                "allocatable": {GPU: None},
            },
        },
        {
            "metadata": {"name": "x", "labels": {"nvidia.com/gpu.product": T4}},
            "status": {
                "conditions": [{"type": "Ready", "status": "True"}],
                "allocatable": {GPU: "lots"},
            },
        },
    ],
)
def test_malformed_nodes_do_not_crash(obj):
    inventory = built()
    for event_type in ("ADDED", "MODIFIED", "DELETED", "ERROR", None):
        inventory.apply_node(event_type, obj)
        assert inventory.snapshot() == inventory.recount()
    inventory.reset(nodes=[obj], pods=[])


@pytest.mark.parametrize(
    "obj",
    [
        None,
        {},
        [],
        "pod",
        {"metadata": None},
        {"metadata": {"name": None}},
        {"metadata": {"name": "x", "namespace": 3}},
        {"metadata": {"name": "x"}, "spec": "junk"},
        {"metadata": {"name": "x"}, "spec": {"nodeName": ["t4-node"]}},
        {
            "metadata": {"name": "x"},
            "spec": {"nodeName": "t4-node", "containers": None},
            "status": None,
        },
        {
            "metadata": {"name": "x"},
            "spec": {"nodeName": "t4-node", "containers": [None, {"resources": []}]},
        },
        {
            "metadata": {"name": "x"},
            "spec": {
                "nodeName": "t4-node",
                "containers": [{"resources": {"limits": {GPU: "lots"}}}],
            },
        },
        {
            "metadata": {"name": "x", "ownerReferences": [None, 5]},
            "status": {"phase": ["Running"]},
            "spec": {
                "nodeName": "t4-node",
                "containers": [{"resources": {"limits": {GPU: 1.5}}}],
                "initContainers": [7],
            },
        },
    ],
)
def test_malformed_pods_do_not_crash(obj):
    inventory = built()
    for event_type in ("ADDED", "MODIFIED", "DELETED", "ERROR", None):
        inventory.apply_pod(event_type, obj)
        assert inventory.snapshot() == inventory.recount()
    inventory.reset(nodes=[], pods=[obj])


@pytest.mark.parametrize(
    "value, expected",
    [
        ("2", 2),
        (2, 2),
        ("0", 0),
        ("-1", 0),
        (-3, 0),
        ("2k", 2000),
        ("1Ki", 1024),
        ("1500m", 1),
        ("500m", 0),
        ("1e3", 1000),
        ("abc", 0),
        ("", 0),
        (None, 0),
        (True, 0),
        (1.5, 0),
        ("Infinity", 0),
        ("NaN", 0),
    ],
)
def test_units(value, expected):
    assert units(value) == expected


# ---- property: incremental counts == recount, after every event ----------------------------

NODE_NAMES = ["n0", "n1", "n2"]
POD_KEYS = [(ns, f"p{i}") for ns in ("a", "b") for i in range(3)]
GROUP_SETS = [(), ("cms-ml",), ("cms-ml", "atlas")]
RESOURCES = [GPU, GPU, MIG_1G, MIG_2G, "example.com/other"]  # GPUs twice: collisions matter
TAINTS = [
    RESERVED_CMS,
    {"key": "reserved", "value": "atlas", "effect": "NoSchedule"},
    {"key": "reserved", "effect": "NoSchedule"},
    VIRTUAL_TAINT,
    {"key": "virtual-kubelet.io/provider", "value": "x", "effect": "NoSchedule"},
    {"key": "nvidia.com/gpu", "effect": "NoSchedule"},
]
small = st.sampled_from(["0", "1", "1", "2", "3"])
NODE_FIELDS = {
    "product": st.sampled_from([T4, T4, A100, RTX, "Other", None]),
    "resources": st.dictionaries(st.sampled_from(RESOURCES), small, min_size=1, max_size=3),
    "ready": st.sampled_from(["True", "True", "True", "True", "False", "Unknown", None]),
    "unschedulable": st.sampled_from([False, False, False, False, True]),
    "taints": st.one_of(st.just([]), st.just([]), st.lists(st.sampled_from(TAINTS), max_size=2)),
    "labels": st.sampled_from([{}, {}, {}, {}, {}, {"type": "virtual-kubelet"}]),
}
POD_FIELDS = {
    "node_name": st.sampled_from([*NODE_NAMES, *NODE_NAMES, None]),
    "limits": st.dictionaries(st.sampled_from(RESOURCES), small, max_size=2),
    "requests": st.dictionaries(st.sampled_from(RESOURCES), small, max_size=2),
    "init": st.lists(
        st.builds(
            lambda r, always: {
                "name": "i",
                "resources": {"limits": r},
                **({"restartPolicy": "Always"} if always else {}),
            },
            st.dictionaries(st.sampled_from(RESOURCES), small, max_size=1),
            st.booleans(),
        ),
        max_size=2,
    ),
    "phase": st.sampled_from(
        ["Pending", "Running", "Running", "Running", "Succeeded", "Failed", "Unknown", None]
    ),
    "queue": st.sampled_from([None, None, "local"]),
    "job": st.booleans(),
    "job_name": st.sampled_from([None, "j1", "j1", "j2"]),
    "job_label": st.sampled_from(["batch.kubernetes.io/job-name", "job-name"]),
}
EVENT_TYPES = st.sampled_from(["ADDED", "MODIFIED", "MODIFIED", "DELETED"])


@st.composite
def variants(draw, fields: dict) -> list[dict]:
    """Three versions of one object's parameters, each differing from the first in one field,
    so consecutive events flip one thing (readiness, cordon, reservation, node, phase...)."""
    base = {name: draw(strategy) for name, strategy in fields.items()}
    versions = [base]
    for _ in range(2):
        changed = draw(st.sampled_from(sorted(fields)))
        versions.append({**base, changed: draw(fields[changed])})
    return versions


@st.composite
def scenarios(draw) -> list[tuple[str, str, dict]]:
    nodes = {
        name: [
            node(
                name,
                p["product"],
                p["resources"],
                ready=p["ready"],
                unschedulable=p["unschedulable"],
                taints=p["taints"],
                labels=p["labels"],
            )
            for p in draw(variants(NODE_FIELDS))
        ]
        for name in NODE_NAMES
    }
    pods = {
        key: [
            pod(
                key[1],
                p["node_name"],
                p["limits"],
                requests=p["requests"],
                phase=p["phase"],
                namespace=key[0],
                queue=p["queue"],
                job=p["job"],
                init=p["init"] or None,
                job_name=p["job_name"],
                job_label=p["job_label"],
            )
            for p in draw(variants(POD_FIELDS))
        ]
        for key in POD_KEYS
    }
    steps = draw(
        st.lists(
            st.one_of(
                st.tuples(
                    st.just("node"), EVENT_TYPES, st.sampled_from(NODE_NAMES), st.integers(0, 2)
                ),
                st.tuples(
                    st.just("pod"), EVENT_TYPES, st.sampled_from(POD_KEYS), st.integers(0, 2)
                ),
                st.tuples(
                    st.just("pod"), EVENT_TYPES, st.sampled_from(POD_KEYS), st.integers(0, 2)
                ),
            ),
            min_size=20,
            max_size=60,
        )
    )
    return [
        (kind, event_type, (nodes if kind == "node" else pods)[name][version])
        for kind, event_type, name, version in steps
    ]


def assert_consistent(inventory: Inventory) -> None:
    for groups in GROUP_SETS:
        assert inventory.snapshot(groups) == inventory.recount(groups)
        per_node = inventory.recount_per_node(groups)
        assert inventory.per_node(groups) == per_node
        for key in inventory.accelerator_keys:
            frees = [c for (accelerator, _), c in per_node.items() if accelerator == key]
            assert inventory.largest_free_block(key, groups) == max(
                (c.free for c in frees), default=0
            )
            assert inventory.largest_free_block(key, groups, preempt=True) == max(
                (c.free_if_preempted for c in frees), default=0
            )


POD_MOVES_BEFORE_ITS_NODE_APPEARS = [
    ("pod", "ADDED", pod("p0", "n0", {GPU: "1"}, namespace="a")),
    ("pod", "MODIFIED", pod("p0", "n1", {GPU: "1"}, namespace="a")),
    ("node", "ADDED", node("n0", T4, {GPU: "2"})),
    ("node", "ADDED", node("n1", T4, {GPU: "2"})),
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
@example(POD_MOVES_BEFORE_ITS_NODE_APPEARS)
def test_incremental_counts_equal_a_recount_after_every_event(sequence):
    inventory = Inventory(ACCELERATORS)
    current: dict[tuple[str, str], dict] = {}  # the objects the API server would list now
    for kind, event_type, obj in sequence:
        meta = obj["metadata"]
        key = (kind, f"{meta.get('namespace', '')}/{meta['name']}")
        if kind == "node":
            inventory.apply_node(event_type, obj)
        else:
            inventory.apply_pod(event_type, obj)
        if event_type == "DELETED":
            current.pop(key, None)
        else:
            current[key] = obj
        assert_consistent(inventory)
    fresh = Inventory(ACCELERATORS)
    fresh.reset(
        nodes=[o for (k, _), o in current.items() if k == "node"],
        pods=[o for (k, _), o in current.items() if k == "pod"],
    )
    for groups in GROUP_SETS:
        assert fresh.snapshot(groups) == inventory.snapshot(groups)
        assert fresh.per_node(groups) == inventory.per_node(groups)
