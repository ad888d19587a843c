"""Every object of helm-values/, and what values.yaml's Kubernetes pieces become in the chart,
sent to the real API server with server-side dry run and strict field validation: a misspelt
or misplaced field fails here, not at an admin's `kubectl apply`.

Namespaced objects go to the test's namespace (the files say `jhub`); cluster-wide ones are sent
as written. Nothing is stored. The API server decodes and validates an object (strict fields,
then its validation and admission, Kueue's webhooks included) before it looks for an existing one,
so an AlreadyExists answer for a cluster-wide object the tests already applied (priority classes,
flavors, queues) still means it is valid; the misspelling check below shows the order.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import pytest_asyncio
from kubernetes_asyncio.client import ApiException
from kubernetes_asyncio.dynamic import DynamicClient

from tests.helm_values import (
    HELM_VALUES,
    into_namespace,
    object_files,
    objects,
    rendered_pieces,
    values,
)

pytestmark = pytest.mark.integration

STRICT_DRY_RUN = [("dryRun", "All"), ("fieldValidation", "Strict")]
FILES = object_files()


@pytest_asyncio.fixture(loop_scope="session")
async def dynamic(api_client, kueue, tmp_path):
    """A client that finds each kind's resource from the API server's discovery (Kueue's
    kinds exist once the `kueue` fixture ran)."""
    return await DynamicClient(api_client, cache_file=str(tmp_path / "discovery.json"))


async def dry_run(dynamic: DynamicClient, document: dict, namespace: str) -> str | None:
    """None if the API server accepts the object as valid, else its status and message. (The
    request is made here: the dynamic client's own create returns a refusal as a Status.)"""
    resource = await dynamic.resources.get(
        api_version=document["apiVersion"], kind=document["kind"]
    )
    path = resource.path(namespace=namespace) if resource.namespaced else resource.path()
    try:
        await dynamic.client.call_api(
            path,
            "POST",
            query_params=list(STRICT_DRY_RUN),
            body=document,
            header_params={"Content-Type": "application/json", "Accept": "application/json"},
            auth_settings=["BearerToken"],
            response_types_map={"201": "object"},
            _return_http_data_only=True,
        )
    except ApiException as error:
        if error.status == 409 and not resource.namespaced:
            return None
        return f"{error.status}: {error.body}"
    return None


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
async def test_every_object_is_valid_for_the_api_server(dynamic, namespace, path: Path):
    refused = {}
    for document in objects(path):
        answer = await dry_run(dynamic, into_namespace(document, namespace), namespace)
        if answer:
            refused[f"{document['kind']} {document['metadata']['name']}"] = answer
    assert not refused


async def test_what_values_yaml_puts_in_the_charts_objects_is_valid(dynamic, namespace):
    refused = {}
    for document in rendered_pieces(values()):
        answer = await dry_run(dynamic, document, namespace)
        if answer:
            refused[f"{document['kind']} {document['metadata']['name']}"] = answer
    assert not refused


def misspelt(file: str, kind: str, where: tuple[str, ...], field: str, typo: str) -> dict:
    """The first object of this kind in a helm-values file, with one field renamed to a typo."""
    document = copy.deepcopy(next(d for d in objects(HELM_VALUES / file) if d["kind"] == kind))
    parent = document
    for key in where:
        parent = parent[key]
    parent[typo] = parent.pop(field)
    return document


@pytest.mark.parametrize(
    "document",
    [
        misspelt(
            "storage.yaml", "PersistentVolumeClaim", ("spec",), "storageClassName", "storageClass"
        ),
        # Cluster-wide objects the tests have applied already: refused all the same, not
        # AlreadyExists.
        misspelt("priority-classes.yaml", "PriorityClass", (), "preemptionPolicy", "preemptPolicy"),
        misspelt("kueue-queues.yaml", "ResourceFlavor", ("spec",), "nodeLabels", "nodeLabel"),
    ],
    ids=["claim", "priority-class", "kueue-flavor"],
)
async def test_a_misspelt_field_is_refused(dynamic, namespace, document):
    answer = await dry_run(dynamic, into_namespace(document, namespace), namespace)
    assert answer and answer.startswith("400:") and "unknown field" in answer, answer
