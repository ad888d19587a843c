"""The one place that loads Kubernetes configuration and makes kubernetes_asyncio clients."""

from __future__ import annotations

import os

from kubernetes_asyncio import client, config, utils


async def api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """An ApiClient from kubeconfig (or $KUBECONFIG), else the in-cluster service account."""
    path = kubeconfig or os.environ.get("KUBECONFIG")
    configuration = client.Configuration()
    if path:
        await config.load_kube_config(config_file=path, client_configuration=configuration)
    else:
        config.load_incluster_config(client_configuration=configuration)
    return client.ApiClient(configuration)


async def apply_objects(api: client.ApiClient, path: str | os.PathLike) -> None:
    """Server-side apply every object of a YAML file (idempotent: safe to run at every start)."""
    await utils.create_from_yaml(api, str(path), apply=True)
