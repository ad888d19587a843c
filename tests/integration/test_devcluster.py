"""The dev cluster is a real control plane: scheduler, controller-manager and admission decide."""

from __future__ import annotations

import ipaddress
import uuid

import pytest
from aiinfn_dev.devcluster import components, topology
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from tests.helpers import (
    has_default_service_account,
    restricted_container,
    restricted_pod,
    wait_until,
)

pytestmark = pytest.mark.integration

A100 = "NVIDIA-A100-80GB-PCIe"


def _require_product(product: str) -> dict:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "nvidia.com/gpu.product", "operator": "In", "values": [product]}
                        ]
                    }
                ]
            }
        }
    }


async def test_topology_nodes_are_ready_with_accelerators(core):
    nodes = {
        n.metadata.name: n
        for n in (await core.list_node(label_selector=topology.TOPOLOGY_LABEL)).items
    }
    expected = {m["metadata"]["name"] for m in topology.node_manifests("ai-infn")}
    assert expected <= set(nodes)
    mig = nodes["server2-a100-mig"]
    assert mig.status.allocatable["nvidia.com/mig-3g.40gb"] == "1"
    assert any(c.type == "Ready" and c.status == "True" for c in mig.status.conditions)
    sites = {
        n.metadata.name: n.metadata.labels["virtual-node.interlink/site"]
        for n in nodes.values()
        if "virtual-node.interlink/site" in (n.metadata.labels or {})
    }
    assert sites == {
        "interlink-infn-t1": "infn-t1-htcondor",
        "vk-podman-vm": "podman-vm",
        "vk-leonardo-slurm": "leonardo-slurm",
        "vk-hpc-bubble-slurm": "hpc-bubble-slurm",
    }
    for name in sites:
        taints = nodes[name].spec.taints
        assert [t.key for t in taints] == ["virtual-node.interlink/no-schedule"]


async def test_gpu_pod_is_bound_to_an_a100_node_with_a_loopback_ip(core, namespace):
    pod = restricted_pod("a100-pod", limits={"nvidia.com/gpu": "1"})
    pod["spec"]["affinity"] = _require_product(A100)
    await core.create_namespaced_pod(namespace, pod)

    async def running():
        current = await core.read_namespaced_pod("a100-pod", namespace)
        return current if current.status.phase == "Running" and current.status.pod_ip else None

    current = await wait_until(running, "the A100 pod to run")
    node = await core.read_node(current.spec.node_name)
    assert node.metadata.labels["nvidia.com/gpu.product"] == A100
    assert ipaddress.ip_address(current.status.pod_ip).is_loopback


async def test_pod_asking_for_nine_gpus_stays_pending_with_a_scheduling_event(core, namespace):
    await core.create_namespaced_pod(
        namespace, restricted_pod("greedy", limits={"nvidia.com/gpu": "9"})
    )

    async def failed_scheduling():
        events = await core.list_namespaced_event(
            namespace, field_selector="involvedObject.name=greedy"
        )
        return [e for e in events.items if e.reason == "FailedScheduling"]

    events = await wait_until(failed_scheduling, "a FailedScheduling event")
    assert "nvidia.com/gpu" in events[0].message
    pod = await core.read_namespaced_pod("greedy", namespace)
    assert pod.status.phase == "Pending" and not pod.spec.node_name


async def test_privileged_pod_is_refused_by_pod_security(core, namespace):
    pod = restricted_pod("privileged")
    pod["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    with pytest.raises(ApiException) as refused:
        await core.create_namespaced_pod(namespace, pod)
    assert refused.value.status == 403
    assert "violates PodSecurity" in refused.value.body and "restricted" in refused.value.body
    assert not (await core.list_namespaced_pod(namespace)).items


async def test_job_pods_are_created_by_the_controller_manager_and_the_job_completes(
    core, batch, namespace
):
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "hello"},
        "spec": {
            "completions": 2,
            "parallelism": 2,
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": {"pod-complete.stage.kwok.x-k8s.io/delay": "2s"}},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "containers": [restricted_container(command=["python", "-c", "print(42)"])],
                },
            },
        },
    }
    await batch.create_namespaced_job(namespace, job)

    async def complete():
        current = await batch.read_namespaced_job("hello", namespace)
        return current if current.status.succeeded == 2 else None

    done = await wait_until(complete, "the Job to complete")
    assert any(c.type == "Complete" and c.status == "True" for c in done.status.conditions)
    pods = (await core.list_namespaced_pod(namespace, label_selector="job-name=hello")).items
    assert len(pods) == 2
    assert all(p.metadata.owner_references[0].kind == "Job" for p in pods)
    assert all(p.status.phase == "Succeeded" for p in pods)


def _site_job(name: str, node: str, env: list[dict]) -> dict:
    container = restricted_container(command=["true"])
    container["env"] = env
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "nodeSelector": {"kubernetes.io/hostname": node},
                    "tolerations": [
                        {"key": "virtual-node.interlink/no-schedule", "operator": "Exists"}
                    ],
                    "containers": [container],
                },
            },
        },
    }


async def test_site_virtual_nodes_run_job_pods_and_fail_those_told_to(core, batch, namespace):
    """Each site has its own kwok stages; a pod whose env says so fails there (exit code 1) or
    runs as long as it says (the site's default is 1-1.5 s on the Podman VM)."""
    fail = [{"name": components.SITE_OUTCOME_ENV, "value": "fail"}]
    slow = [{"name": components.SITE_RUNTIME_ENV, "value": "8s"}]
    await batch.create_namespaced_job(namespace, _site_job("ok", "vk-podman-vm", []))
    await batch.create_namespaced_job(namespace, _site_job("bad", "vk-hpc-bubble-slurm", fail))
    await batch.create_namespaced_job(namespace, _site_job("slow", "vk-podman-vm", slow))

    async def finished(name: str, condition: str):
        job = await batch.read_namespaced_job(name, namespace)
        conditions = job.status.conditions or []
        return job if any(c.type == condition and c.status == "True" for c in conditions) else None

    await wait_until(lambda: finished("ok", "Complete"), "the site's Job to complete")
    await wait_until(lambda: finished("bad", "Failed"), "the failed site's Job to fail")
    [pod] = (await core.list_namespaced_pod(namespace, label_selector="job-name=bad")).items
    assert pod.spec.node_name == "vk-hpc-bubble-slurm" and pod.status.phase == "Failed"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 1
    await wait_until(lambda: finished("slow", "Complete"), "the slow site's Job to complete")
    [pod] = (await core.list_namespaced_pod(namespace, label_selector="job-name=slow")).items
    ran = pod.status.container_statuses[0].state.terminated.finished_at - pod.status.start_time
    assert ran.total_seconds() >= 7  # kwok's times are whole seconds


async def test_a_namespace_without_labels_still_enforces_restricted(core):
    """The cluster-wide PodSecurity default is "restricted", not "privileged"."""
    name = f"t-unlabelled-{uuid.uuid4().hex[:8]}"
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        await wait_until(lambda: has_default_service_account(core, name), "default service account")
        pod = restricted_pod("root")
        pod["spec"]["containers"][0]["securityContext"] = {}
        with pytest.raises(ApiException) as refused:
            await core.create_namespaced_pod(name, pod)
        assert refused.value.status == 403
        assert "violates PodSecurity" in refused.value.body
    finally:
        await core.delete_namespace(name)
