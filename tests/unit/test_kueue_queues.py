"""helm-values/kueue-queues.yaml and projects.yaml agree with the catalog and the farm;
kueue_config moves only LocalQueues."""

import pytest
from aiinfn_dev import kueue_config
from aiinfn_dev.devcluster import topology

from aiinfn_hub import admin_files, catalog, names
from aiinfn_hub.platform_config import AiInfnPlatform
from aiinfn_hub.services.jobs.app import AiInfnJobs

DOCUMENTS = kueue_config.load()
CATALOG = catalog.load(catalog.default_path())
NODES = topology.node_manifests("ai-infn")
# The remote sites' flavors, in the order Kueue tries them, and each one's site label.
SITES = {
    "interlink-infn-t1": "infn-t1-htcondor",
    "vk-podman-vm": "podman-vm",
    "vk-leonardo-slurm": "leonardo-slurm",
    "vk-hpc-bubble-slurm": "hpc-bubble-slurm",
}


def objects(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in DOCUMENTS if d["kind"] == kind}


FLAVORS = objects("ResourceFlavor")
CLUSTER_QUEUES = objects("ClusterQueue")


def selected_nodes(flavor: dict) -> list[dict]:
    """The topology's nodes a flavor's labels select and whose taints it allows."""
    labels = flavor["spec"].get("nodeLabels", {}).items()
    allowed = flavor["spec"].get("nodeTaints", [])
    return [
        n
        for n in NODES
        if labels <= n["metadata"]["labels"].items()
        and all(t in allowed for t in n["spec"]["taints"])
    ]


def nominal(flavor: str, resource: str) -> dict[str, int | str]:
    """Per ClusterQueue, the nominal quota of one flavor's resource."""
    result = {}
    for name, queue in CLUSTER_QUEUES.items():
        [group] = queue["spec"]["resourceGroups"]
        entry = next(f for f in group["flavors"] if f["name"] == flavor)
        result[name] = next(r for r in entry["resources"] if r["name"] == resource)["nominalQuota"]
    return result


def test_local_queues_move_to_the_namespace_and_the_rest_stays_as_written():
    documents = [
        {"kind": "ResourceFlavor", "metadata": {"name": "t4"}},
        {
            "kind": "LocalQueue",
            "metadata": {"name": "project-qml", "namespace": "jupyterhub"},
            "spec": {"clusterQueue": "project-qml"},
        },
    ]
    assert kueue_config.local_queues(documents, "t-1") == [
        {
            "kind": "LocalQueue",
            "metadata": {"name": "project-qml", "namespace": "t-1"},
            "spec": {"clusterQueue": "project-qml"},
        }
    ]
    assert kueue_config.cluster_objects(documents) == [
        {"kind": "ResourceFlavor", "metadata": {"name": "t4"}}
    ]
    assert documents[1]["metadata"]["namespace"] == "jupyterhub"


def test_every_catalog_project_has_a_local_queue_and_a_cluster_queue_of_its_object_name():
    expected = {names.object_name("project", key) for key in CATALOG.projects}
    assert set(CLUSTER_QUEUES) == expected
    local = objects("LocalQueue")
    assert set(local) == expected
    assert {q["metadata"]["namespace"] for q in local.values()} == {"jhub"}
    assert all(q["spec"]["clusterQueue"] == name for name, q in local.items())


def test_project_queues_share_one_cohort_preempt_by_priority_and_reclaim_lent_quota():
    for queue in CLUSTER_QUEUES.values():
        spec = {k: v for k, v in queue["spec"].items() if k != "resourceGroups"}
        assert spec == {
            "cohortName": "aiinfn",
            "namespaceSelector": {},
            "queueingStrategy": "BestEffortFIFO",
            "preemption": {
                "withinClusterQueue": "LowerPriority",
                "reclaimWithinCohort": "Any",
                "borrowWithinCohort": {"policy": "Never"},
            },
            # spill to the next flavor (an offloadable job's remote site) rather than borrow
            # quota its owner may reclaim, or preempt local work
            "flavorFungibility": {
                "whenCanBorrow": "TryNextFlavor",
                "whenCanPreempt": "TryNextFlavor",
            },
        }


def test_workload_priority_classes():
    assert {name: wpc["value"] for name, wpc in objects("WorkloadPriorityClass").items()} == {
        "aiinfn-low": 10,
        "aiinfn-normal": 100,
        "aiinfn-high": 500,
    }


def test_every_flavor_is_topology_aware_over_the_nodes_so_kueue_counts_notebooks():
    """Kueue's topology-aware admission counts what pods it does not manage (notebooks) hold on
    each node; it needs every flavor of a queue to be topology-aware, remote sites included."""
    assert objects("Topology") == {
        "aiinfn-nodes": {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "Topology",
            "metadata": {
                "name": "aiinfn-nodes",
                "labels": {"app.kubernetes.io/part-of": "aiinfn-hub"},
            },
            "spec": {"levels": [{"nodeLabel": "kubernetes.io/hostname"}]},
        }
    }
    assert {f["spec"].get("topologyName") for f in FLAVORS.values()} == {"aiinfn-nodes"}
    assert all(n["metadata"]["labels"]["kubernetes.io/hostname"] for n in NODES)
    kinds = [d["kind"] for d in DOCUMENTS]
    assert kinds.index("Topology") < kinds.index("ResourceFlavor")


def test_flavors_are_the_catalog_accelerators_and_the_sites_tried_local_first():
    assert set(FLAVORS) == set(CATALOG.accelerators) | set(SITES)
    for queue in CLUSTER_QUEUES.values():
        [group] = queue["spec"]["resourceGroups"]
        order = [f["name"] for f in group["flavors"]]
        assert order[0] == "cpu" and order[-len(SITES) :] == list(SITES)
        assert sorted(order) == sorted(FLAVORS)
        for entry in group["flavors"]:
            assert [r["name"] for r in entry["resources"]] == group["coveredResources"]


@pytest.mark.parametrize("key", sorted(CATALOG.accelerators))
def test_each_accelerator_flavor_selects_the_nodes_the_catalog_means(key):
    accelerator = CATALOG.accelerators[key]
    flavor = FLAVORS[key]
    assert accelerator.node_labels.items() <= flavor["spec"]["nodeLabels"].items()
    assert "tolerations" not in flavor["spec"] and "nodeTaints" not in flavor["spec"]
    nodes = selected_nodes(flavor)
    if accelerator.resource:
        # (the whole-A100 flavor's labels also fit the MIG-split A100, which publishes no
        # nvidia.com/gpu)
        assert any(int(n["status"]["allocatable"].get(accelerator.resource, 0)) for n in nodes)
    else:  # CPU-only work: the service nodes, never an accelerator node
        assert nodes
        assert all(
            not {"nvidia.com/gpu.present", "xilinx.com/fpga.board"} & n["metadata"]["labels"].keys()
            for n in nodes
        )


@pytest.mark.parametrize("name", SITES)
def test_each_site_flavor_is_its_virtual_node_only_for_jobs_that_tolerate_its_taint(name):
    flavor = FLAVORS[name]["spec"]
    [node] = selected_nodes(FLAVORS[name])
    assert node["metadata"]["name"] == name
    assert node["metadata"]["labels"]["virtual-node.interlink/site"] == SITES[name]
    assert flavor["nodeLabels"]["virtual-node.interlink/site"] == SITES[name]
    assert flavor["nodeTaints"] == node["spec"]["taints"]
    assert "tolerations" not in flavor


@pytest.mark.parametrize("name", SITES)
def test_each_projects_quota_of_a_site_is_the_whole_site(name):
    [node] = selected_nodes(FLAVORS[name])
    for resource in ("cpu", "memory", "nvidia.com/gpu"):
        have = admin_files.quantity(node["status"]["allocatable"].get(resource, "0"))
        assert {admin_files.quantity(str(q)) for q in nominal(name, resource).values()} == {have}


@pytest.mark.parametrize("key", sorted(k for k, a in CATALOG.accelerators.items() if a.resource))
def test_project_shares_of_an_accelerator_add_up_to_the_farm(key):
    resource = CATALOG.accelerators[key].resource
    nodes = selected_nodes(FLAVORS[key])
    assert sum(nominal(key, resource).values()) == sum(
        int(n["status"]["allocatable"].get(resource, 0)) for n in nodes
    )


@pytest.mark.parametrize("key", sorted(CATALOG.accelerators))
def test_project_shares_of_cpu_and_memory_fit_the_flavors_nodes(key):
    nodes = selected_nodes(FLAVORS[key])
    for resource in ("cpu", "memory"):
        shares = sum(admin_files.quantity(str(q)) for q in nominal(key, resource).values())
        assert (
            0
            < shares
            <= sum(admin_files.quantity(n["status"]["allocatable"][resource]) for n in nodes)
        )


def test_a_remote_only_term_rules_out_every_local_flavor_and_no_remote_one():
    """Kueue matches a job's node affinity only on a flavor's own label keys: a job meant for
    the virtual node requires the service's local flavor keys absent (the platform's accelerator
    labels and `c.AiInfnJobs.local_flavor_label_keys`, here the cpu flavor's), so each local
    flavor must carry one of them and the virtual node's flavor none."""
    keys = {*AiInfnPlatform().accelerator_node_labels, "node-role.kubernetes.io/services"}
    for name, flavor in FLAVORS.items():
        carried = keys & set(flavor["spec"]["nodeLabels"])
        assert bool(carried) == (name not in SITES), name


def test_the_job_services_default_site_policies_name_these_flavors_in_this_order():
    policies = AiInfnJobs.class_traits()["sites"].default()
    assert [p["flavor"] for p in policies.values()] == list(SITES)
    assert list(policies) == list(SITES.values())
