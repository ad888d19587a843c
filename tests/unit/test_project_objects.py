"""The per-project objects from the catalog: how the farm is shared out, and the literal
manifests for a small catalog and cluster."""

from __future__ import annotations

import copy

import pytest
import yaml

from aiinfn_hub import catalog, project_objects
from aiinfn_hub.project_objects import FlavorSize, ProjectStorage, RenderError, split

DEFAULT = yaml.safe_load(catalog.default_path().read_text())
SMALL = catalog.parse(
    {
        "accelerators": {
            "cpu": {"display_name": "CPU", "kind": "cpu"},
            "t4": {
                "display_name": "T4",
                "kind": "gpu",
                "resource": "nvidia.com/gpu",
                "node_labels": {"gpu": "t4"},
            },
            "mig-1g": {"display_name": "1g", "kind": "mig", "resource": "nvidia.com/mig-1g"},
            "mig-3g": {"display_name": "3g", "kind": "mig", "resource": "nvidia.com/mig-3g"},
        },
        "environments": {
            "e": {
                "display_name": "E",
                "image": "registry.invalid/e:1",
                "kinds": ["cpu", "gpu", "mig"],
            }
        },
        "sizes": {
            kind: {
                "default": "s",
                "choices": {"s": {"display_name": "S", "cpu": "1", "memory": "1Gi"}},
            }
            for kind in ("cpu", "gpu", "mig", "fpga")
        },
        "projects": {
            "ml": {"display_name": "ML"},
            "lhcb/sim": {"display_name": "Sim", "batch_share": 2},
        },
    }
)
TAINT = {"key": "virtual", "value": "true", "effect": "NoSchedule"}


def flavor(name: str, labels: dict, taints: list | None = None) -> dict:
    spec = {"nodeLabels": labels, **({"nodeTaints": taints} if taints else {})}
    return {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "ResourceFlavor",
        "metadata": {"name": name},
        "spec": spec,
    }


def node(
    name: str,
    labels: dict,
    cpu: str,
    memory: str,
    resources: dict | None = None,
    taints: list | None = None,
) -> dict:
    allocatable = {"cpu": cpu, "memory": memory, **(resources or {})}
    return {
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": taints or []},
        "status": {"allocatable": allocatable},
    }


FLAVORS = [
    flavor("remote", {"remote": "yes"}, [TAINT]),
    flavor("cpu", {"role": "services"}),
    flavor("t4", {"gpu": "t4"}),
    flavor("mig-1g", {"mig": "mixed"}),
    flavor("mig-3g", {"mig": "mixed"}),
]
NODES = [
    node("services", {"role": "services"}, "16", "64Gi"),
    node("t4-a", {"gpu": "t4"}, "32", "375Gi", {"nvidia.com/gpu": "4"}),
    node("t4-b", {"gpu": "t4"}, "7500m", "100Gi", {"nvidia.com/gpu": "1"}),
    # One A100 cut into two 1g slices and one 3g slice: its CPUs and memory go 2:1.
    node(
        "mig", {"mig": "mixed"}, "30", "96Gi", {"nvidia.com/mig-1g": "2", "nvidia.com/mig-3g": "1"}
    ),
    # A tainted T4 node no flavor lists the taint of: nobody's quota.
    node(
        "t4-tainted",
        {"gpu": "t4"},
        "8",
        "8Gi",
        {"nvidia.com/gpu": "8"},
        [{"key": "broken", "effect": "NoExecute"}],
    ),
    node("virtual", {"remote": "yes"}, "2000", "8Ti", {"nvidia.com/gpu": "16"}, [TAINT]),
]


def test_units_are_shared_by_weight_and_add_up():
    assert split(8, [1, 1, 1]) == [3, 3, 2]
    assert split(5, [1, 2]) == [2, 3]
    # The unit left goes to the project with the fewest extra units so far.
    assert split(1, [1, 1, 1], extras=[1, 1, 0]) == [0, 0, 1]
    assert split(2, [1, 1, 1], extras=[0, 1, 0]) == [1, 0, 1]
    assert split(7, [0, 3]) == [0, 7]
    assert split(3, [0, 0]) == [0, 0]
    assert split(0, [1, 1]) == [0, 0]


def test_flavor_sizes_count_the_nodes_kueue_would_use():
    assert project_objects.flavor_sizes(SMALL, FLAVORS, NODES) == [
        FlavorSize(
            "remote",
            None,
            2000,
            8192,
            {"nvidia.com/gpu": 16, "nvidia.com/mig-1g": 0, "nvidia.com/mig-3g": 0},
            rationed=False,
        ),
        FlavorSize("cpu", None, 16, 64, {}),
        FlavorSize("t4", "nvidia.com/gpu", 39, 475, {"nvidia.com/gpu": 5}),
        FlavorSize("mig-1g", "nvidia.com/mig-1g", 20, 64, {"nvidia.com/mig-1g": 2}),
        FlavorSize("mig-3g", "nvidia.com/mig-3g", 10, 32, {"nvidia.com/mig-3g": 1}),
    ]


def test_every_catalog_accelerator_needs_a_flavor():
    with pytest.raises(
        RenderError, match="no ResourceFlavor for the catalog accelerator.s. mig-3g$"
    ):
        project_objects.flavor_sizes(SMALL, FLAVORS[:-1], NODES)


def test_projects_own_parts_by_batch_share_and_borrow_up_to_their_part_again():
    sizes = [
        FlavorSize("remote", None, 2000, 8192, {"nvidia.com/gpu": 16}, rationed=False),
        FlavorSize("cpu", None, 16, 64, {}),
        FlavorSize("t4", "nvidia.com/gpu", 39, 475, {"nvidia.com/gpu": 5}),
        FlavorSize("mig-3g", "nvidia.com/mig-3g", 10, 32, {"nvidia.com/mig-3g": 1}),
    ]
    resources = ["cpu", "memory", "nvidia.com/gpu", "nvidia.com/mig-3g"]
    ml, sim = project_objects.quotas(list(SMALL.projects.values()), sizes, resources)
    none = {"nvidia.com/gpu": (0, None), "nvidia.com/mig-3g": (0, None)}
    whole = {"cpu": (2000, None), "memory": ("8Ti", None), **none, "nvidia.com/gpu": (16, None)}
    assert ml == {
        "remote": whole,
        "cpu": {"cpu": (5, None), "memory": ("21Gi", None), **none},
        "t4": {"cpu": (16, None), "memory": ("190Gi", None), **none, "nvidia.com/gpu": (2, 2)},
        # The one slice: 1/3 and 2/3 of it, the larger remainder wins.
        "mig-3g": {"cpu": (0, None), "memory": (0, None), **none, "nvidia.com/mig-3g": (0, 1)},
    }
    assert sim == {
        "remote": whole,
        "cpu": {"cpu": (11, None), "memory": ("43Gi", None), **none},
        "t4": {"cpu": (23, None), "memory": ("285Gi", None), **none, "nvidia.com/gpu": (3, 3)},
        "mig-3g": {
            "cpu": (10, None),
            "memory": ("32Gi", None),
            **none,
            "nvidia.com/mig-3g": (1, 1),
        },
    }


def test_leftover_units_go_round_the_projects_from_flavor_to_flavor():
    three = [catalog.Project(key, key) for key in ("a", "b", "c")]
    sizes = [FlavorSize(f"f{i}", "x/y", 0, 0, {"x/y": 1}) for i in range(4)]
    owned = project_objects.quotas(three, sizes, ["cpu", "memory", "x/y"])
    assert [[q[f"f{i}"]["x/y"][0] for q in owned] for i in range(4)] == [
        [1, 0, 0],
        [0, 1, 0],
        [0, 0, 1],
        [1, 0, 0],
    ]


def test_a_catalog_where_no_project_has_a_share_is_refused():
    idle = [catalog.Project("a", "A", batch_share=0)]
    with pytest.raises(RenderError, match="every project has batch_share 0"):
        project_objects.quotas(idle, [FlavorSize("cpu", None, 1, 1)], ["cpu", "memory"])


def test_the_objects_of_one_project():
    storage = ProjectStorage(nfs_server="nfs.invalid", nfs_path="/projects", size="1Ti")
    [_, sim] = project_objects.project_objects(SMALL, FLAVORS, NODES, "hub-ns", storage)
    volume, claim, cluster_queue, local_queue = sim
    labels = {
        "app.kubernetes.io/part-of": "aiinfn-hub",
        "app.kubernetes.io/component": "storage",
        "aiinfn.infn.it/project": "lhcb-sim---562e314a",
    }
    assert volume == {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": "aiinfn-project-lhcb-2fsim",
            "labels": labels,
            "annotations": {"aiinfn.infn.it/root-mode": "1733"},
        },
        "spec": {
            "capacity": {"storage": "1Ti"},
            "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "mountOptions": ["nfsvers=4.2", "hard", "noatime"],
            "nfs": {"server": "nfs.invalid", "path": "/projects"},
            "claimRef": {"namespace": "hub-ns", "name": "aiinfn-project-lhcb-2fsim"},
        },
    }
    assert claim == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "aiinfn-project-lhcb-2fsim", "namespace": "hub-ns", "labels": labels},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "",
            "volumeName": "aiinfn-project-lhcb-2fsim",
            "resources": {"requests": {"storage": "1Ti"}},
        },
    }
    queue_labels = {
        "app.kubernetes.io/part-of": "aiinfn-hub",
        "aiinfn.infn.it/project": "lhcb-sim---562e314a",
    }
    assert local_queue == {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "LocalQueue",
        "metadata": {"name": "project-lhcb-2fsim", "namespace": "hub-ns", "labels": queue_labels},
        "spec": {"clusterQueue": "project-lhcb-2fsim"},
    }
    zero = [
        {"name": "nvidia.com/gpu", "nominalQuota": 0},
        {"name": "nvidia.com/mig-1g", "nominalQuota": 0},
        {"name": "nvidia.com/mig-3g", "nominalQuota": 0},
    ]

    def resources(cpu, memory, **own):
        entries = [
            {"name": "cpu", "nominalQuota": cpu},
            {"name": "memory", "nominalQuota": memory},
            *copy.deepcopy(zero),
        ]
        for entry in entries:
            if entry["name"] in own:
                entry["nominalQuota"], entry["borrowingLimit"] = own[entry["name"]]
        return entries

    assert cluster_queue == {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "ClusterQueue",
        "metadata": {"name": "project-lhcb-2fsim", "labels": queue_labels},
        "spec": {
            "cohortName": "aiinfn",
            "namespaceSelector": {},
            "queueingStrategy": "BestEffortFIFO",
            "preemption": {
                "withinClusterQueue": "LowerPriority",
                "reclaimWithinCohort": "Any",
                "borrowWithinCohort": {"policy": "Never"},
            },
            "flavorFungibility": {
                "whenCanBorrow": "TryNextFlavor",
                "whenCanPreempt": "TryNextFlavor",
            },
            "resourceGroups": [
                {
                    "coveredResources": [
                        "cpu",
                        "memory",
                        "nvidia.com/gpu",
                        "nvidia.com/mig-1g",
                        "nvidia.com/mig-3g",
                    ],
                    "flavors": [
                        {
                            "name": "remote",
                            "resources": [
                                {"name": "cpu", "nominalQuota": 2000},
                                {"name": "memory", "nominalQuota": "8Ti"},
                                {"name": "nvidia.com/gpu", "nominalQuota": 16},
                                *copy.deepcopy(zero[1:]),
                            ],
                        },
                        {"name": "cpu", "resources": resources(11, "43Gi")},
                        {
                            "name": "t4",
                            "resources": resources(23, "285Gi", **{"nvidia.com/gpu": (3, 3)}),
                        },
                        {
                            "name": "mig-1g",
                            "resources": resources(10, "32Gi", **{"nvidia.com/mig-1g": (1, 1)}),
                        },
                        {
                            "name": "mig-3g",
                            "resources": resources(10, "32Gi", **{"nvidia.com/mig-3g": (1, 1)}),
                        },
                    ],
                }
            ],
        },
    }


def catalog_with_share(share) -> dict:
    document = copy.deepcopy(DEFAULT)
    document["projects"]["qml"]["batch_share"] = share
    return document


def test_batch_share_is_a_whole_weight_with_a_default_of_one():
    parsed = catalog.parse(catalog_with_share(5))
    assert [p.batch_share for p in parsed.projects.values()] == [1, 1, 5]
    unset = catalog_with_share(None)
    del unset["projects"]["qml"]["batch_share"]
    assert catalog.parse(unset).projects["qml"].batch_share == 1


@pytest.mark.parametrize("share", [-1, 1001, 1.5, "2", True, None])
def test_a_batch_share_that_is_no_whole_weight_is_refused(share):
    with pytest.raises(
        catalog.CatalogError, match=r"projects\.qml\.batch_share: must be a whole number 0\.\.1000"
    ):
        catalog.parse(catalog_with_share(share))
