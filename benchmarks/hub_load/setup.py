"""The load run's dev cluster, namespace, hub and job service.

One restricted namespace holds everything: the priority classes, the storage claims (bound to
local folders), the projects' LocalQueues held (stopPolicy: Hold, so submitted Jobs get their
Workloads but no pods) and the hub ServiceAccount with the shipped RBAC. The hub is a real
JupyterHub process (tests/hub.py) with the repository's configuration and the demo login, the
job service an external service beside it (tests/jobs_service.py); both as that account.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiinfn_dev import devstorage, hubaccount, kueue_config
from aiinfn_dev.devcluster import components
from aiinfn_dev.devcluster.cluster import DevCluster
from aiinfn_dev.devcluster.processes import free_port
from kubernetes_asyncio import client
from measuring import say

from aiinfn_hub import k8s, labels
from tests.hub import REPO, Hub, start_hub, stop_hub
from tests.jobs_service import Service, hub_lines

GROUPS = ["cms-ml"]
SPAWNER = {"default_policy": {"accelerators": ["cpu"], "environments": "*"}}


@dataclass
class Platform:
    cluster: DevCluster
    hub: Hub
    service: Service
    namespace: str

    def pids(self) -> dict[str, int]:
        """The processes whose CPU the run samples."""
        proxy = int((self.hub.log_path.parent / "proxy.pid").read_text())
        assert self.service.process is not None
        return {
            "hub": self.hub.process.pid,
            "proxy": proxy,
            "jobs service": self.service.process.pid,
            **{
                p.name: p.pid
                for p in self.cluster.status().processes
                if p.name in ("kube-apiserver", "kwok")
            },
        }


def start_cluster(topology: str, cleanup: list) -> tuple[DevCluster, dict[str, Any]]:
    """The cluster named by $AIINFN_DEVCLUSTER_NAME (default "bench-load"), pod runner off: kwok
    marks the pods Running, no JupyterLab runs (the hub reaches a stand-in instead)."""
    name = os.environ.get("AIINFN_DEVCLUSTER_NAME", "bench-load")
    port = int(os.environ.get("AIINFN_DEVCLUSTER_PORT") or free_port())
    cluster = DevCluster(name=name, port=port, log=say, pod_runner=False, topology_name=topology)
    started = time.monotonic()
    if cluster.up(timeout=600):
        cleanup.append(cluster.down)
    return cluster, {
        "name": name,
        "topology": topology,
        "up_s": round(time.monotonic() - started, 1),
    }


async def prepare_namespace(
    api: client.ApiClient, kubeconfig: Path, tmp: Path, cleanup: list
) -> tuple[str, Path]:
    """The namespace (see the module's docstring); its name and the hub account's kubeconfig."""
    await k8s.apply_objects(api, REPO / "helm-values" / "priority-classes.yaml")
    await kueue_config.apply(api, kueue_config.cluster_objects(kueue_config.load()))
    core = client.CoreV1Api(api)
    namespace = f"bench-load-{uuid.uuid4().hex[:6]}"
    restricted = {
        labels.POD_SECURITY_ENFORCE: "restricted",
        labels.MANAGED_BY: "aiinfn-hub-bench",
    }
    await core.create_namespace({"metadata": {"name": namespace, "labels": restricted}})
    cleanup.append(lambda: core.delete_namespace(namespace))
    held = kueue_config.local_queues(kueue_config.load(), namespace)
    for queue in held:
        queue["spec"]["stopPolicy"] = "Hold"
    await kueue_config.apply(api, held)
    storage = await devstorage.setup(api, namespace, tmp / "storage")
    cleanup.append(lambda: devstorage.delete_volumes(api, storage))
    deadline = time.monotonic() + 120
    while not await devstorage.claims_bound(api, namespace, storage):
        if time.monotonic() > deadline:
            raise SystemExit("the storage claims were never bound")
        await asyncio.sleep(0.5)
    account = await hubaccount.hub_kubeconfig(api, namespace, kubeconfig, tmp / "hub.kubeconfig")
    cleanup.append(lambda: hubaccount.delete_cluster_objects(api, namespace))
    return namespace, account


def hub_config(
    service_port: int,
    token: str,
    users: list[str],
    spawn_limit: int | None,
    start_delay_s: float,
) -> list:
    """Config lines after the repository's: the job service, every simulated user a demo user
    (none logged in at start), `concurrent_spawn_limit` when one is asked for (else the
    repository's setting, or JupyterHub's default), and kwok's delay before a notebook pod is
    Running when one is asked for (a real server takes seconds to pull and start)."""
    demo = {user: {"groups": GROUPS} for user in users}
    lines = [*hub_lines(service_port, token), f"c.DemoAuthenticator.demo_users = {demo!r}"]
    if spawn_limit is not None:
        lines.append(f"c.JupyterHub.concurrent_spawn_limit = {spawn_limit}")
    if start_delay_s:
        delay = {components.POD_READY_DELAY_ANNOTATION: f"{int(start_delay_s * 1000)}ms"}
        lines.append(f"c.KubeSpawner.extra_annotations = {delay!r}")
    return lines


async def start_platform(
    cluster: DevCluster,
    api: client.ApiClient,
    tmp: Path,
    users: list[str],
    spawn_limit: int | None,
    start_delay_s: float,
    cleanup: list,
) -> Platform:
    """The namespace, the hub and the job service, each stopped by `cleanup`."""
    kubeconfig = cluster.layout.admin_kubeconfig
    namespace, account = await prepare_namespace(api, kubeconfig, tmp, cleanup)
    service_port, token = free_port(), secrets.token_hex(32)
    lines = hub_config(service_port, token, users, spawn_limit, start_delay_s)
    hub, responder = await asyncio.to_thread(start_hub, tmp, account, namespace, {}, SPAWNER, lines)
    cleanup.append(lambda: asyncio.to_thread(stop_hub, hub, responder))
    service = Service(tmp, hub, service_port, token)
    await asyncio.to_thread(service.start)
    cleanup.append(lambda: asyncio.to_thread(service.stop))
    return Platform(cluster, hub, service, namespace)
