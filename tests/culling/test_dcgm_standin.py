"""The stand-in DCGM exporter following a namespace's pods on the dev cluster (what the demo
runs): a running pod holding a kwok T4 is served at 0% with dcgm-exporter's pod labels, and
dropped once deleted."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest
from aiinfn_dev.dcgm import following

from tests.helpers import restricted_pod, wait_until

pytestmark = pytest.mark.integration


def scrape(target: str) -> str:
    with urllib.request.urlopen(f"http://{target}/metrics", timeout=5) as answer:
        return answer.read().decode()


async def test_it_serves_the_gpu_pods_of_a_namespace(devcluster, core, namespace):
    kubeconfig, _ = devcluster
    pod = restricted_pod("gpu-user", limits={"nvidia.com/gpu": "1"})
    pod["spec"]["nodeName"] = "server1-t4"
    await core.create_namespaced_pod(namespace, pod)
    await core.create_namespaced_pod(namespace, restricted_pod("cpu-user"))
    series = f'namespace="{namespace}",pod="gpu-user"}} 0'
    with following(str(kubeconfig), namespace, every=0.2) as exporter:

        async def served(present: bool) -> bool:
            text = await asyncio.to_thread(scrape, exporter.target)
            return (series in text) == present and 'pod="cpu-user"' not in text

        await wait_until(lambda: served(True), "the GPU pod's series")
        await core.delete_namespaced_pod("gpu-user", namespace, grace_period_seconds=0)
        await wait_until(lambda: served(False), "the deleted pod's series to go")
