"""The one place that loads Kubernetes configuration and makes kubernetes_asyncio clients."""

from __future__ import annotations

import os

import yaml
from kubernetes_asyncio import client, config, utils

STRICT = "Strict"
"""Every create, replace and patch passes ``field_validation=STRICT``: a misspelled field is
refused by the API server instead of silently dropped."""


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
    with open(path, encoding="utf-8") as stream:
        documents = [d for d in yaml.safe_load_all(stream) if d]
    for document in documents:
        # A fresh list per call: the dynamic client appends its own parameters to it.
        await utils.create_from_yaml_single_item(
            api, document, apply=True, query_params=[("fieldValidation", STRICT)]
        )
