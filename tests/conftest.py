"""Shared fixtures: the real dev cluster (session), API clients, a fresh namespace per test.

The cluster is started if it is not running and reused if it is; if this session started it, it
stops it (every process by pid) at the end. AIINFN_KUBECONFIG points the suite at an existing
cluster instead (one whose nodes kwok plays; the topology is loaded if missing).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import pytest_asyncio
from aiinfn_dev import devstorage, kueue_config
from aiinfn_dev.devcluster import topology
from aiinfn_dev.devcluster.cluster import DEFAULT_NAME, DEFAULT_PORT, DevCluster
from kubernetes_asyncio import client

from aiinfn_hub import k8s, labels
from tests.helpers import has_default_service_account, wait_until
from tests.hub_marker import hub_items
from tests.oidc_provider import keycloak  # noqa: F401 (the real OpenID provider fixture)

REPO = Path(__file__).resolve().parent.parent


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item so fixtures can tell whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def session_cluster_address() -> tuple[str, int]:
    """The session cluster's name and API port: AIINFN_DEVCLUSTER_NAME/PORT, or the defaults. Each
    pytest-xdist worker gets a cluster of its own (name `-gwN`, the port N+1 above), so tests
    running at once never see each other's nodes, pods or queues."""
    name = os.environ.get("AIINFN_DEVCLUSTER_NAME", DEFAULT_NAME)
    port = int(os.environ.get("AIINFN_DEVCLUSTER_PORT", DEFAULT_PORT))
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        index = int(worker.removeprefix("gw"))
        return f"{name}-{worker}", port + 1 + index
    return name, port


@pytest.fixture(scope="session")
def devcluster():
    """(kubeconfig path, DevCluster or None): the running cluster the integration tests use."""
    external = os.environ.get("AIINFN_KUBECONFIG")
    if external:
        yield Path(external), None
        return
    name, port = session_cluster_address()
    cluster = DevCluster(name=name, port=port)
    started = cluster.up()
    try:
        yield cluster.layout.admin_kubeconfig, cluster
    finally:
        if started:
            cluster.down()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def api_client(devcluster):
    kubeconfig, cluster = devcluster
    api = await k8s.api_client(str(kubeconfig))
    async with api:
        if cluster is None:
            await topology.ensure_nodes(client.CoreV1Api(api), "ai-infn")
        await k8s.apply_objects(api, REPO / "helm-values" / "priority-classes.yaml")
        yield api


@pytest.fixture
def core(api_client) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture
def batch(api_client) -> client.BatchV1Api:
    return client.BatchV1Api(api_client)


async def _print_events(core: client.CoreV1Api, namespace: str) -> None:
    events = await core.list_namespaced_event(namespace)
    print(f"--- events in namespace {namespace} ---")
    for event in sorted(events.items, key=lambda e: str(e.last_timestamp or e.event_time or "")):
        obj = event.involved_object
        print(f"{event.type:7} {event.reason:20} {obj.kind}/{obj.name}: {event.message}")


@pytest_asyncio.fixture(loop_scope="session")
async def namespace(request, core):
    """A fresh namespace enforcing Pod Security "restricted"; its events are printed if the test
    fails."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    await core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(
                name=name,
                labels={
                    labels.POD_SECURITY_ENFORCE: "restricted",
                    labels.POD_SECURITY_ENFORCE_VERSION: "latest",
                    labels.MANAGED_BY: "aiinfn-hub-tests",
                },
            )
        )
    )
    await wait_until(
        lambda: has_default_service_account(core, name), what="default service account"
    )
    try:
        yield name
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            await _print_events(core, name)
        await core.delete_namespace(name)


@pytest_asyncio.fixture(loop_scope="session")
async def storage(api_client, namespace, tmp_path):
    """helm-values/storage.yaml in the test namespace: its claims bound to local folders."""
    documents = await devstorage.setup(api_client, namespace, tmp_path / "storage")
    try:
        await wait_until(
            lambda: devstorage.claims_bound(api_client, namespace, documents),
            "the storage claims to be bound",
        )
        yield documents
    finally:
        await devstorage.delete_volumes(api_client, documents)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def kueue(devcluster, api_client) -> list[dict]:
    """Kueue runs in the test cluster with helm-values/kueue-queues.yaml's cluster-wide objects
    applied and its ClusterQueues active; the file's documents (for `local_queues`)."""
    _, cluster = devcluster
    if cluster is not None and "kueue" not in {p.name for p in cluster.status().processes}:
        pytest.fail(
            f"dev cluster {cluster.name!r} was started without Kueue (by an older version): "
            f"restart it with `aiinfn-devcluster down --name {cluster.name}`"
        )
    crds = await client.ApiextensionsV1Api(api_client).list_custom_resource_definition(
        field_selector="metadata.name=clusterqueues.kueue.x-k8s.io"
    )
    if not crds.items:
        pytest.skip("Kueue is not installed in the AIINFN_KUBECONFIG cluster")
    documents = kueue_config.load()
    cluster_objects = kueue_config.cluster_objects(documents)
    await kueue_config.apply(api_client, cluster_objects)
    await wait_until(
        lambda: kueue_config.queues_active(api_client, cluster_objects),
        "Kueue to activate the ClusterQueues",
    )
    return documents


@pytest_asyncio.fixture(loop_scope="session")
async def local_queues(kueue, api_client, namespace) -> list[dict]:
    """The projects' LocalQueues in the test namespace, active (they go with the namespace)."""
    queues = kueue_config.local_queues(kueue, namespace)
    await kueue_config.apply(api_client, queues)
    await wait_until(
        lambda: kueue_config.queues_active(api_client, queues), "Kueue to activate the LocalQueues"
    )
    return queues


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """Mark `hub` the tests that can behave differently under another JupyterHub (before -m
    selects): the rule is in tests/hub_marker.py."""
    for item in hub_items(items):
        item.add_marker(pytest.mark.hub)


_FILE_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report):
    """Add each phase's time to its file's (on the controller under xdist: every worker's)."""
    path = report.nodeid.partition("::")[0]
    _FILE_SECONDS[path] = _FILE_SECONDS.get(path, 0.0) + report.duration


def pytest_sessionfinish(session):
    """test-artifacts/file-seconds-<hub version>.tsv: seconds per test file, longest first, to
    see where the suite's time goes (a worker writes nothing: the controller has them all)."""
    if os.environ.get("PYTEST_XDIST_WORKER") or not _FILE_SECONDS:
        return
    import jupyterhub

    out = Path(os.environ.get("AIINFN_TEST_ARTIFACTS", REPO / "test-artifacts"))
    out.mkdir(parents=True, exist_ok=True)
    rows = sorted(_FILE_SECONDS.items(), key=lambda row: -row[1])
    (out / f"file-seconds-{jupyterhub.__version__}.tsv").write_text(
        "".join(f"{seconds:.1f}\t{path}\n" for path, seconds in rows)
    )
