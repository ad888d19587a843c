"""A test hub (tests/hub.py's start_hub, as the ServiceAccount `hub` with the shipped RBAC) whose
Kubernetes API server is reached through a FaultProxy: the drills' one hub per module."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import yaml
from kubernetes_asyncio import client

from tests.faults.fault_proxy import FaultProxy
from tests.hub import Hub, hub_in_namespace


def _cluster(kubeconfig: Path, folder: Path) -> tuple[str, Path]:
    """(server, CA path) of the admin kubeconfig's first cluster (a CA given inline is written
    to `folder`)."""
    config = yaml.safe_load(kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    if "certificate-authority-data" in cluster:
        path = folder / "upstream-ca.crt"
        path.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
        return cluster["server"], path
    return cluster["server"], kubeconfig.parent / cluster["certificate-authority"]


@contextlib.asynccontextmanager
async def proxied_hub(
    api_client: client.ApiClient,
    kubeconfig: Path,
    folder: Path,
    users: dict[str, dict],
    spawner_config: dict[str, object],
    extra_config: Sequence[str] = (),
    kueue_documents: list[dict] | None = None,
) -> AsyncIterator[tuple[Hub, FaultProxy]]:
    """(hub, proxy): tests/hub.py's hub_in_namespace with the hub account's kubeconfig rewritten
    to the proxy (`folder`/proxy.kubeconfig, for a service beside the hub too); all removed on
    exit. `kubeconfig` is the cluster admin's, used only to set this up."""
    server, ca = _cluster(kubeconfig, folder)
    proxy = FaultProxy(server, ca, folder / "proxy-pki")
    await asyncio.to_thread(proxy.start)
    try:
        async with hub_in_namespace(
            api_client,
            kubeconfig,
            folder,
            users,
            spawner_config,
            extra_config,
            kueue_documents=kueue_documents,
            hub_kubeconfig=lambda account: proxy.kubeconfig(account, folder / "proxy.kubeconfig"),
        ) as hub:
            yield hub, proxy
    finally:
        await asyncio.to_thread(proxy.stop)
