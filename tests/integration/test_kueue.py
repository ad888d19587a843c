"""The admin's queue configuration under the real Kueue controller of the dev cluster.

Jobs are built here the way the job service builds them (suspended batch/v1 Jobs with the queue
and priority labels, restricted pods, requests = limits); Kueue admits them, the controller-manager
makes their pods, the scheduler binds them and kwok runs them. Quotas are read from
helm-values/kueue-queues.yaml, so the tests follow the file when an admin changes it.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import pytest_asyncio
from aiinfn_dev import kueue_config
from aiinfn_dev.devcluster import processes
from aiinfn_dev.devcluster.cluster import DevCluster
from kubernetes_asyncio import client

from aiinfn_hub import k8s, names
from tests.helpers import (
    has_default_service_account,
    restricted_container,
    restricted_pod,
    wait_until,
)

pytestmark = pytest.mark.integration

GROUP, VERSION = kueue_config.API_GROUP, kueue_config.API_VERSION
VIRTUAL_NODE_LABEL = "virtual-node.interlink/type"
VIRTUAL_NODE_TAINT = "virtual-node.interlink/no-schedule"
ACCELERATOR_NODE_LABELS = ("nvidia.com/gpu.present", "xilinx.com/fpga.board")
# Every local flavor has one of these keys, the virtual node's none (c.AiInfnJobs).
LOCAL_FLAVOR_LABELS = (*ACCELERATOR_NODE_LABELS, "node-role.kubernetes.io/services")
# Job pods run until deleted (kwok's pod-complete delay), so they hold their quota.
LONG_RUN = "1h"


def queue(project: str) -> str:
    return names.object_name("project", project)


def make_job(
    name: str,
    project: str,
    resources: dict[str, str],
    *,
    node_labels: dict[str, str] | None = None,
    cpu_only: bool = False,
    offload: str = "never",
    pods: int = 1,
    priority: str = "aiinfn-normal",
) -> dict[str, Any]:
    """A Job as the job service makes it: suspended, queue and priority labels, restricted pod;
    `offload` never (local nodes), may (local or remote: Kueue's flavor decides) or only."""
    local = [{"key": "type", "operator": "NotIn", "values": ["virtual-kubelet"]}]
    local += [
        {"key": k, "operator": "In", "values": [v]} for k, v in sorted((node_labels or {}).items())
    ]
    if cpu_only:
        local += [{"key": k, "operator": "DoesNotExist"} for k in ACCELERATOR_NODE_LABELS]
    remote = [{"key": VIRTUAL_NODE_LABEL, "operator": "In", "values": ["virtual-kubelet"]}]
    remote += [{"key": k, "operator": "DoesNotExist"} for k in LOCAL_FLAVOR_LABELS]
    terms = {"never": [local], "may": [local, remote], "only": [remote]}[offload]
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "priorityClassName": "aiinfn-batch",
        "automountServiceAccountToken": False,
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": e} for e in terms]
                }
            }
        },
        "containers": [restricted_container(limits={"cpu": "1", "memory": "1Gi", **resources})],
    }
    if offload != "never":
        spec["tolerations"] = [
            {
                "key": VIRTUAL_NODE_TAINT,
                "operator": "Equal",
                "value": "true",
                "effect": "NoSchedule",
            }
        ]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "labels": {
                "kueue.x-k8s.io/queue-name": queue(project),
                "kueue.x-k8s.io/priority-class": priority,
            },
        },
        "spec": {
            "suspend": True,
            "parallelism": pods,
            "completions": pods,
            "backoffLimit": 0,
            # A pod the cluster stopped (a notebook's preemption) is not a failure: the Job
            # makes a replacement, as the job service's Jobs do.
            "podFailurePolicy": {
                "rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]
            },
            "template": {
                "metadata": {"annotations": {"pod-complete.stage.kwok.x-k8s.io/delay": LONG_RUN}},
                "spec": spec,
            },
        },
    }


def quota(documents: list[dict], project: str, flavor: str, resource: str) -> dict[str, Any]:
    """The quota entry of a project's ClusterQueue for one flavor and resource."""
    cluster_queue = next(
        d
        for d in documents
        if d["kind"] == "ClusterQueue" and d["metadata"]["name"] == queue(project)
    )
    for group in cluster_queue["spec"]["resourceGroups"]:
        for entry in group["flavors"]:
            if entry["name"] == flavor:
                return next(r for r in entry["resources"] if r["name"] == resource)
    raise KeyError(flavor)


def flavor_labels(documents: list[dict], flavor: str) -> dict[str, str]:
    return next(
        d for d in documents if d["kind"] == "ResourceFlavor" and d["metadata"]["name"] == flavor
    )["spec"].get("nodeLabels", {})


def cohort_total(documents: list[dict], flavor: str, resource: str) -> int:
    projects = [
        d["metadata"]["labels"]["aiinfn.infn.it/project"]
        for d in documents
        if d["kind"] == "ClusterQueue"
    ]
    return sum(int(quota(documents, p, flavor, resource)["nominalQuota"]) for p in projects)


class Cluster:
    """Reading Jobs, their Workloads and pods in one test namespace."""

    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    async def submit(self, job: dict[str, Any]) -> None:
        await self.batch.create_namespaced_job(self.namespace, job)

    async def delete(self, name: str) -> None:
        await self.batch.delete_namespaced_job(
            name, self.namespace, propagation_policy="Background"
        )

    async def workload(self, job: str) -> dict[str, Any] | None:
        workloads = await self.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "workloads"
        )
        for workload in workloads["items"]:
            owners = workload["metadata"].get("ownerReferences", [])
            if any(o["kind"] == "Job" and o["name"] == job for o in owners):
                return workload
        return None

    async def condition(self, job: str, kind: str) -> dict[str, Any] | None:
        workload = await self.workload(job)
        for condition in (workload or {}).get("status", {}).get("conditions", []):
            if condition["type"] == kind:
                return condition
        return None

    async def admitted_flavors(self, job: str) -> dict[str, str] | None:
        """The flavor per resource once the Workload is admitted, else None."""
        admitted = await self.condition(job, "Admitted")
        if not admitted or admitted["status"] != "True":
            return None
        workload = await self.workload(job)
        return workload["status"]["admission"]["podSetAssignments"][0]["flavors"]

    async def running_pods(self, job: str, count: int = 1) -> list[client.V1Pod] | None:
        pods = await self.core.list_namespaced_pod(
            self.namespace, label_selector=f"batch.kubernetes.io/job-name={job}"
        )
        running = [
            p
            for p in pods.items
            if p.status.phase == "Running" and not p.metadata.deletion_timestamp
        ]
        return running if len(running) >= count else None

    async def suspended(self, job: str) -> bool:
        return bool((await self.batch.read_namespaced_job(job, self.namespace)).spec.suspend)

    async def wait_admitted(self, job: str) -> dict[str, str]:
        return await wait_until(
            lambda: self.admitted_flavors(job), f"job {job} to be admitted by Kueue"
        )

    async def wait_running(self, job: str, count: int = 1) -> list[client.V1Pod]:
        return await wait_until(
            lambda: self.running_pods(job, count), f"{count} running pod(s) of job {job}"
        )

    async def wait_condition(self, job: str, kind: str, status: str = "True") -> dict[str, Any]:
        async def check():
            condition = await self.condition(job, kind)
            return condition if condition and condition["status"] == status else None

        return await wait_until(check, f"condition {kind}={status} on the workload of job {job}")


@pytest_asyncio.fixture(loop_scope="session")
async def kueue_idle(kueue, api_client):
    """Wait until no earlier test's workload still holds quota: namespaces are deleted in the
    background, and these tests fill quotas exactly."""
    custom = client.CustomObjectsApi(api_client)
    cluster_queues = [d["metadata"]["name"] for d in kueue if d["kind"] == "ClusterQueue"]

    async def idle():
        for name in cluster_queues:
            status = (
                await custom.get_cluster_custom_object(GROUP, VERSION, "clusterqueues", name)
            ).get("status", {})
            if status.get("reservingWorkloads", 0) or status.get("admittedWorkloads", 0):
                return False
        return True

    await wait_until(idle, "the project ClusterQueues to hold no workloads from earlier tests")


@pytest_asyncio.fixture(loop_scope="session")
async def cluster(api_client, namespace, local_queues, kueue_idle):
    """The test namespace's view; its Jobs are deleted at the end, which frees their quota
    sooner than the namespace's deletion would."""
    view = Cluster(api_client, namespace)
    yield view
    await view.batch.delete_collection_namespaced_job(namespace, propagation_policy="Background")


@pytest.mark.parametrize(
    "project, resources, node_labels, cpu_only, flavor",
    [
        ("cms-ml", {"nvidia.com/gpu": "1"}, {"nvidia.com/gpu.product": "Tesla-T4"}, False, "t4"),
        ("lhcb-flashsim", {"nvidia.com/mig-2g.20gb": "1"}, {}, False, "a100-mig-2g-20gb"),
        (
            "cms-ml",
            {"xilinx.com/fpga-xilinx_u250_gen3x16_xdma_shell_4_1": "1"},
            {"xilinx.com/fpga.board": "u250"},
            False,
            "u250",
        ),
        ("qml", {}, {}, True, "cpu"),
    ],
    ids=["t4", "mig-2g", "u250", "cpu-only"],
)
async def test_job_is_admitted_to_its_flavor_and_runs_on_its_nodes(
    cluster, kueue, project, resources, node_labels, cpu_only, flavor
):
    await cluster.submit(
        make_job("work", project, resources, node_labels=node_labels, cpu_only=cpu_only)
    )

    flavors = await cluster.wait_admitted("work")
    assert set(flavors.values()) == {flavor}
    assert set(flavors) == {"cpu", "memory", *resources}
    [pod] = await cluster.wait_running("work")
    labels = flavor_labels(kueue, flavor)
    assert (
        labels.items() <= (pod.spec.node_selector or {}).items()
    )  # injected by Kueue on admission
    node = await cluster.core.read_node(pod.spec.node_name)
    assert labels.items() <= node.metadata.labels.items()


async def test_job_over_its_projects_quota_waits_until_quota_frees(cluster, kueue):
    gpu = quota(kueue, "cms-ml", "t4", "nvidia.com/gpu")
    reach = int(gpu["nominalQuota"]) + int(gpu["borrowingLimit"])
    # The limit is the project's (own share plus what it may borrow), not the farm's.
    assert reach < cohort_total(kueue, "t4", "nvidia.com/gpu")
    t4 = {"nvidia.com/gpu.product": "Tesla-T4"}
    await cluster.submit(
        make_job("fill", "cms-ml", {"nvidia.com/gpu": "1"}, node_labels=t4, pods=reach)
    )
    await cluster.wait_admitted("fill")

    await cluster.submit(make_job("extra", "cms-ml", {"nvidia.com/gpu": "1"}, node_labels=t4))
    waiting = await cluster.wait_condition("extra", "QuotaReserved", "False")
    assert waiting["reason"] == "Pending" and waiting["message"].startswith(
        "couldn't assign flavors"
    )
    assert await cluster.suspended("extra")
    assert not (
        await cluster.core.list_namespaced_pod(
            cluster.namespace, label_selector="batch.kubernetes.io/job-name=extra"
        )
    ).items

    await cluster.delete("fill")
    assert await cluster.wait_admitted("extra") == {
        "cpu": "t4",
        "memory": "t4",
        "nvidia.com/gpu": "t4",
    }
    await cluster.wait_running("extra")


async def test_higher_priority_job_preempts_a_lower_priority_job_of_the_same_project(
    cluster, kueue
):
    gpu = quota(kueue, "lhcb-flashsim", "a100", "nvidia.com/gpu")
    reach = int(gpu["nominalQuota"]) + int(gpu["borrowingLimit"])
    a100 = {"nvidia.com/gpu.product": "NVIDIA-A100-80GB-PCIe"}
    await cluster.submit(
        make_job(
            "low",
            "lhcb-flashsim",
            {"nvidia.com/gpu": "1"},
            node_labels=a100,
            pods=reach,
            priority="aiinfn-low",
        )
    )
    await cluster.wait_running("low", reach)

    await cluster.submit(
        make_job(
            "high",
            "lhcb-flashsim",
            {"nvidia.com/gpu": "1"},
            node_labels=a100,
            priority="aiinfn-high",
        )
    )
    preempted = await cluster.wait_condition("low", "Preempted")
    assert preempted["reason"] == "InClusterQueue"
    await cluster.wait_admitted("high")
    [pod] = await cluster.wait_running("high")
    assert (await cluster.core.read_node(pod.spec.node_name)).metadata.labels[
        "nvidia.com/gpu.product"
    ] == a100["nvidia.com/gpu.product"]
    # The preempted job is suspended again (its pods removed) and waits in its queue.
    assert await wait_until(lambda: cluster.suspended("low"), "the preempted job to be suspended")
    assert (await cluster.condition("low", "QuotaReserved"))["status"] == "False"


async def test_owner_reclaims_its_share_from_a_borrowing_project_whatever_the_priorities(
    cluster, kueue
):
    flavor, gpu = "rtx5000", "nvidia.com/gpu"
    rtx = {"nvidia.com/gpu.product": "Quadro-RTX-5000"}
    share = {
        p: int(quota(kueue, p, flavor, gpu)["nominalQuota"])
        for p in ("cms-ml", "lhcb-flashsim", "qml")
    }
    lending = quota(kueue, "lhcb-flashsim", flavor, gpu)
    borrowed = min(int(lending["borrowingLimit"]), share["cms-ml"])
    # lhcb-flashsim borrows cms-ml's idle share, qml uses its own: the flavor is full.
    await cluster.submit(
        make_job(
            "borrower",
            "lhcb-flashsim",
            {gpu: "1"},
            node_labels=rtx,
            pods=share["lhcb-flashsim"] + borrowed,
            priority="aiinfn-high",
        )
    )
    await cluster.wait_admitted("borrower")
    await cluster.submit(
        make_job("neighbour", "qml", {gpu: "1"}, node_labels=rtx, pods=share["qml"])
    )
    await cluster.wait_admitted("neighbour")

    # cms-ml asks for its own share back, at the lowest priority: the borrower is preempted.
    await cluster.submit(
        make_job(
            "owner",
            "cms-ml",
            {gpu: "1"},
            node_labels=rtx,
            pods=share["cms-ml"],
            priority="aiinfn-low",
        )
    )
    preempted = await cluster.wait_condition("borrower", "Preempted")
    assert preempted["reason"] == "InCohortReclamation"
    assert set((await cluster.wait_admitted("owner")).values()) == {flavor}
    await cluster.wait_running("owner", share["cms-ml"])
    assert (await cluster.condition("neighbour", "Evicted")) is None


A30 = {"nvidia.com/gpu.product": "NVIDIA-A30"}


def a30_notebook(name: str) -> dict[str, Any]:
    """A notebook server's pod (Kueue does not manage it) on the farm's only A30."""
    pod = restricted_pod(name, limits={"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "1"})
    pod["spec"].update(priorityClassName="aiinfn-notebook", nodeSelector=A30)
    return pod


async def reserved(cluster: Cluster, cluster_queue: str, flavor: str, resource: str) -> int:
    """What a ClusterQueue's admitted and reserving workloads hold of a flavor's resource."""
    status = (
        await cluster.custom.get_cluster_custom_object(
            GROUP, VERSION, "clusterqueues", cluster_queue
        )
    ).get("status", {})
    for entry in status.get("flavorsReservation", []):
        if entry["name"] == flavor:
            for item in entry["resources"]:
                if item["name"] == resource:
                    return int(item["total"])
    return 0


async def waits_for_a_node(cluster: Cluster, job: str) -> dict[str, Any] | None:
    """Kueue tried the job and no node has room for it, although its quota would."""
    workload = await cluster.workload(job)
    for condition in (workload or {}).get("status", {}).get("conditions", []):
        if condition["type"] == "QuotaReserved" and condition["status"] == "False":
            if 'topology "aiinfn-nodes" doesn\'t allow to fit' in condition["message"]:
                return condition
    return None


async def test_a_job_waits_while_a_notebook_holds_its_accelerator_and_runs_once_freed(
    cluster, kueue
):
    """Kueue's topology-aware admission counts the notebook: the job is not admitted onto the
    A30 it holds (its quota is free), and runs as soon as the notebook stops."""
    await cluster.core.create_namespaced_pod(cluster.namespace, a30_notebook("notebook"))
    await wait_until(
        lambda: _phase(cluster, "notebook", "Running"), "the notebook to run on the A30"
    )
    await cluster.submit(make_job("work", "cms-ml", {"nvidia.com/gpu": "1"}, node_labels=A30))

    waiting = await wait_until(lambda: waits_for_a_node(cluster, "work"), "Kueue to try the job")
    assert waiting["reason"] == "Pending"
    assert await cluster.suspended("work") and await cluster.admitted_flavors("work") is None

    await cluster.core.delete_namespaced_pod("notebook", cluster.namespace)
    assert set((await cluster.wait_admitted("work")).values()) == {"a30"}
    [pod] = await cluster.wait_running("work")
    assert pod.spec.node_name == "server2-a30"


async def test_a_job_a_notebook_preempts_is_requeued_not_readmitted_and_runs_again(cluster, kueue):
    """The scheduler stops the job's pod for the notebook; once the replacement pod has waited
    Kueue's recoveryTimeout the job is requeued: suspended, its quota released, and not admitted
    again while the notebook holds the A30 (no loop); it runs again when the notebook stops, its
    quota counted once."""
    queue_name = queue("cms-ml")
    await cluster.submit(make_job("bumped", "cms-ml", {"nvidia.com/gpu": "1"}, node_labels=A30))
    await cluster.wait_running("bumped")
    await cluster.wait_condition("bumped", "PodsReady")
    await cluster.core.create_namespaced_pod(cluster.namespace, a30_notebook("notebook"))
    await wait_until(lambda: _phase(cluster, "notebook", "Running"), "the notebook to take the A30")

    # Hang guards, not timings: the recovery timeout is 30 s in the dev cluster.
    evicted = await wait_until(
        lambda: cluster.condition("bumped", "Evicted"), "Kueue to requeue the job", limit=180
    )
    assert evicted["reason"] == "PodsReadyTimeout"
    await wait_until(lambda: cluster.suspended("bumped"), "the requeued job to be suspended")
    await wait_until(
        lambda: _none_reserved(cluster, queue_name), "the requeued job's quota to be released"
    )
    # Kueue tries it again after the backoff and finds no node: it stays queued.
    await wait_until(
        lambda: waits_for_a_node(cluster, "bumped"), "Kueue to try the job again", limit=180
    )
    assert await cluster.admitted_flavors("bumped") is None

    await cluster.core.delete_namespaced_pod("notebook", cluster.namespace)
    assert set((await cluster.wait_admitted("bumped")).values()) == {"a30"}
    await cluster.wait_running("bumped")
    # The ClusterQueue's status follows the admission a moment later: wait for it to count the
    # job's A30, once (a second count would never equal 1).
    await wait_until(
        lambda: _reserved_once(cluster, queue_name), "the job's A30 to be counted once"
    )


async def _phase(cluster: Cluster, pod: str, phase: str) -> bool:
    return (await cluster.core.read_namespaced_pod(pod, cluster.namespace)).status.phase == phase


async def _none_reserved(cluster: Cluster, cluster_queue: str) -> bool:
    return await reserved(cluster, cluster_queue, "a30", "nvidia.com/gpu") == 0


async def _reserved_once(cluster: Cluster, cluster_queue: str) -> bool:
    return await reserved(cluster, cluster_queue, "a30", "nvidia.com/gpu") == 1


@pytest.mark.parametrize("resources", [{"nvidia.com/gpu": "1"}, {}], ids=["gpu", "cpu-only"])
async def test_an_only_remote_job_lands_on_the_virtual_node(cluster, kueue, resources):
    """The local flavors come first; the remote term's absent keys rule each of them out."""
    await cluster.submit(make_job("remote", "cms-ml", resources, offload="only"))

    assert set((await cluster.wait_admitted("remote")).values()) == {"interlink-infn-t1"}
    [pod] = await cluster.wait_running("remote")
    node = await cluster.core.read_node(pod.spec.node_name)
    assert node.metadata.labels[VIRTUAL_NODE_LABEL] == "virtual-kubelet"
    assert node.metadata.name == "interlink-infn-t1"


async def test_a_may_job_runs_locally_first_and_spills_rather_than_borrow(cluster, kueue):
    """flavorFungibility TryNextFlavor: with the project's own T4s in use, an offloadable job
    goes to the remote site although other projects' T4s are idle; a local-only job borrows."""
    t4 = {"nvidia.com/gpu.product": "Tesla-T4"}
    gpu = {"nvidia.com/gpu": "1"}
    own = int(quota(kueue, "cms-ml", "t4", "nvidia.com/gpu")["nominalQuota"])
    assert own >= 2 and quota(kueue, "cms-ml", "t4", "nvidia.com/gpu")["borrowingLimit"]
    await cluster.submit(make_job("first", "cms-ml", gpu, node_labels=t4, offload="may"))
    assert set((await cluster.wait_admitted("first")).values()) == {"t4"}
    [pod] = await cluster.wait_running("first")
    assert (await cluster.core.read_node(pod.spec.node_name)).metadata.labels[
        "nvidia.com/gpu.product"
    ] == "Tesla-T4"

    await cluster.submit(make_job("fill", "cms-ml", gpu, node_labels=t4, pods=own - 1))
    assert set((await cluster.wait_admitted("fill")).values()) == {"t4"}
    await cluster.submit(make_job("spill", "cms-ml", gpu, node_labels=t4, offload="may"))
    assert set((await cluster.wait_admitted("spill")).values()) == {"interlink-infn-t1"}
    [pod] = await cluster.wait_running("spill")
    assert pod.spec.node_name == "interlink-infn-t1"

    await cluster.submit(make_job("borrower", "cms-ml", gpu, node_labels=t4))
    assert set((await cluster.wait_admitted("borrower")).values()) == {"t4"}


@pytest.fixture
def private_cluster(devcluster):
    """A second cluster beside the session one, to stop its Kueue; removed whatever the test
    does."""
    _, session_cluster = devcluster
    if session_cluster is None:
        pytest.skip("needs the built dev cluster, not AIINFN_KUBECONFIG")
    cluster = DevCluster(
        name=f"kueue-stop-{os.getpid()}",
        port=processes.free_port(),
        cache=session_cluster.cache,
        log=lambda message: None,
    )
    yield cluster
    cluster.down()


async def test_without_kueue_only_queued_jobs_are_refused(private_cluster):
    private_cluster.up()
    kueue = next(p for p in private_cluster.status().processes if p.name == "kueue")
    processes.stop([kueue])
    async with await k8s.api_client(str(private_cluster.layout.admin_kubeconfig)) as api_client:
        core, batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)
        await wait_until(
            lambda: has_default_service_account(core, "default"), "default service account"
        )
        # A notebook pod and a plain Job never reach Kueue's webhooks.
        await core.create_namespaced_pod("default", restricted_pod("notebook"))
        plain = make_job("plain", "cms-ml", {})
        del plain["metadata"]["labels"]
        plain["spec"]["suspend"] = False
        await batch.create_namespaced_job("default", plain)
        # A queued Job is refused loudly rather than run unmanaged.
        with pytest.raises(client.ApiException) as refused:
            await batch.create_namespaced_job("default", make_job("queued", "cms-ml", {}))
        assert refused.value.status == 500 and "mjob.kb.io" in refused.value.body
    private_cluster.down()
    assert not kueue.alive()
