"""The hub as z2jh runs it, in a pod of the dev cluster. The pod runner runs the hub image of
helm-values/values.yaml from the hub environment (.venv-hub) with the pod's projected
ServiceAccount token and the `kubernetes` Service's variables: in-cluster configuration, no
kubeconfig, the shipped RBAC bound to `hub`. Its secrets come from Secrets, the site's
configuration from a ConfigMap; the proxy, the job service and the backup service run beside it
in the pod. From outside, a user logs in through the OpenID provider, sees live accelerator
counts on the spawn form, starts a GPU server (a notebook pod the hub reaches at its pod IP) and
submits a job through the job service with their own token; Kueue admits it and it runs; the
backup service answers her with her (empty) archives.

What differs from z2jh (docs/devcluster.md): the proxy is JupyterHub's default, started by the
hub in its pod (z2jh runs it as its own pod); Services do not route here, so where z2jh says
`hub` (the hub Service) the configuration says the pod's own IP (HUB_SERVICE_HOST stands in for
the Service's variable), and the test reaches the proxy at that IP, not through proxy-public.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import shutil
import textwrap
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
from aiinfn_dev import hubaccount
from aiinfn_dev.devcluster import podrunner
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException
from kubernetes_asyncio.utils import create_from_dict

from aiinfn_hub import labels
from tests.helpers import wait_until
from tests.oidc_provider import Login, Realm, browser_login, make_realm

pytestmark = pytest.mark.integration

CONFIG_DIR = "/usr/local/etc/jupyterhub"
HUB_IMAGE = podrunner.hub_image_name(podrunner.SOURCE_ROOT / podrunner.HUB_VALUES)
HUB_LABELS = {"app.kubernetes.io/name": "jupyterhub", "app.kubernetes.io/component": "hub"}
HUB_SELECTOR = "app.kubernetes.io/component=hub"
USERS = [{"username": "alice", "groups": ["/cms-ml"]}]
PROXY_PORT, PROXY_API_PORT, HUB_PORT, JOBS_PORT, BACKUP_PORT = 8000, 8001, 8081, 10101, 10102
START_LIMIT = 180.0


@pytest.fixture(scope="module")
def proxy(devcluster) -> str:
    """The proxy the hub starts in its pod: the dev environment's configurable-http-proxy (the
    hub image has none: z2jh runs the proxy from its own image), which the pod sees at the same
    path as the checkout's other files (skip when this cluster's runner does not play the hub)."""
    _, cluster = devcluster
    if cluster is None:
        pytest.skip("the in-cluster hub needs the built dev cluster's pod runner")
    if "pod-runner" not in {p.name for p in cluster.status().processes}:
        pytest.skip(f"dev cluster {cluster.name!r} runs without the pod runner (see `up`)")
    settings = podrunner.Settings.from_json(cluster.layout.config("pod-runner.json").read_text())
    if HUB_IMAGE not in settings.images:
        pytest.skip(
            f"dev cluster {cluster.name!r} was started without a hub environment, so its "
            f"pod runner does not play {HUB_IMAGE}: make .venv-hub (./dev does; or set "
            f"{podrunner.HUB_ENV}), then `aiinfn-devcluster down --name {cluster.name}`"
        )
    found = shutil.which("configurable-http-proxy")
    seen = found and all(
        any(path.is_relative_to(p) for p in settings.host_paths)
        for path in (Path(found), Path(found).resolve())
    )
    if not seen:
        pytest.skip(f"no configurable-http-proxy in a folder pods see ({found}): run through ./dev")
    return found


def site_config(issuer: str, proxy: str) -> str:
    """The hub's jupyterhub_config.py, standing in for what z2jh's makes of
    helm-values/values.yaml: the chart's settings and hub.config, then the image's
    jupyterhub_config.d as z2jh loads it, then hub.extraConfig (the site's issuer: it comes after
    jupyterhub_config.d, so it can change what those files set). Services do not route in the
    dev cluster: where the values say `hub` (the hub Service), the pod's own IP."""
    return textwrap.dedent(f"""\
        import glob
        import os

        c = get_config()  # noqa: F821
        here = os.environ["HUB_SERVICE_HOST"]
        hub = f"http://{{here}}:{{os.environ['HUB_SERVICE_PORT']}}"
        c.JupyterHub.cleanup_servers = False
        c.JupyterHub.hub_bind_url = hub
        c.JupyterHub.hub_connect_url = hub
        # The proxy: JupyterHub's default, started by the hub in this pod (z2jh: its own pod).
        c.ConfigurableHTTPProxy.command = [{proxy!r}]
        c.JupyterHub.bind_url = f"http://{{here}}:{PROXY_PORT}"
        c.ConfigurableHTTPProxy.api_url = f"http://{{here}}:{PROXY_API_PORT}"
        c.JupyterHub.db_url = "sqlite:///jupyterhub.sqlite"
        c.KubeSpawner.namespace = os.environ.get("POD_NAMESPACE", "default")
        c.JupyterHub.load_roles = []
        # hub.services and hub.config, as the values have them.
        c.JupyterHub.services = [
            {{"name": "jobs", "url": f"http://{{here}}:{JOBS_PORT}"}},
            {{"name": "backup", "url": f"http://{{here}}:{BACKUP_PORT}"}},
        ]
        c.JupyterHub.authenticator_class = "aiinfn"
        c.AiInfnJobs.bind_url = f"http://{{here}}:{JOBS_PORT}"
        c.AiInfnBackup.bind_url = f"http://{{here}}:{BACKUP_PORT}"

        for path in sorted(glob.glob("{CONFIG_DIR}/jupyterhub_config.d/*.py")):
            with open(path) as f:
                exec(compile(f.read(), path, "exec"))

        # hub.extraConfig: this site's identity provider; no nightly backups (the test reads
        # that alice has no archives yet).
        c.AiInfnOAuthenticator.issuer = {issuer!r}
        c.AiInfnBackup.schedule = ""
        c.KubeSpawner.poll_interval = 1
        """)


def field_env(name: str, path: str) -> dict:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def secret_env(name: str, secret: str, key: str) -> dict:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def hub_container() -> dict:
    """The hub container as z2jh's deployment template makes it from the values."""
    config = {
        "name": "config",
        "mountPath": f"{CONFIG_DIR}/jupyterhub_config.py",
        "subPath": "jupyterhub_config.py",
    }
    return {
        "name": "hub",
        "image": HUB_IMAGE,
        "args": ["jupyterhub", "--config", f"{CONFIG_DIR}/jupyterhub_config.py"],
        "volumeMounts": [config, {"name": "hub-db", "mountPath": "/srv/jupyterhub"}],
        "securityContext": {
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "env": [
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            field_env("POD_NAMESPACE", "metadata.namespace"),
            # What a kubelet would set for the `hub` Service: here the pod's own address.
            field_env("HUB_SERVICE_HOST", "status.podIP"),
            {"name": "HUB_SERVICE_PORT", "value": str(HUB_PORT)},
            secret_env(
                "CONFIGPROXY_AUTH_TOKEN", "hub", "hub.config.ConfigurableHTTPProxy.auth_token"
            ),
            # z2jh sets CryptKeeper.keys from this key of its Secret; here through the env.
            secret_env("JUPYTERHUB_CRYPT_KEY", "hub", "hub.config.CryptKeeper.keys"),
            # hub.extraEnv
            secret_env("OAUTH_CLIENT_ID", "aiinfn-hub-oauth", "client-id"),
            secret_env("OAUTH_CLIENT_SECRET", "aiinfn-hub-oauth", "client-secret"),
        ],
        "ports": [{"name": "http", "containerPort": HUB_PORT}],
        "readinessProbe": {
            "httpGet": {"path": "/hub/health", "port": "http"},
            "periodSeconds": 2,
            "timeoutSeconds": 1,
            "failureThreshold": 1000,
        },
        "resources": {"requests": {"cpu": "200m", "memory": "512Mi"}},
    }


def hub_deployment() -> dict:
    """z2jh's hub Deployment (Recreate, one replica), its ServiceAccount's token mounted."""
    pod = {
        "serviceAccountName": "hub",
        "automountServiceAccountToken": True,
        "nodeSelector": {"node-role.kubernetes.io/services": ""},  # the site's hub.nodeSelector
        "securityContext": {
            "runAsNonRoot": True,
            "fsGroup": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumes": [
            {"name": "config", "configMap": {"name": "hub"}},
            {"name": "hub-db", "emptyDir": {}},
        ],
        "containers": [hub_container()],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "hub", "labels": HUB_LABELS},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": HUB_LABELS},
            "template": {"metadata": {"labels": HUB_LABELS}, "spec": pod},
        },
    }


def secret(name: str, values: dict[str, str]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }


def hub_secrets(realm: Realm) -> list[dict]:
    """The chart's Secret `hub` (what the hub needs of it) and the site's OAuth client."""
    chart = {
        "hub.config.ConfigurableHTTPProxy.auth_token": secrets.token_hex(32),
        "hub.config.CryptKeeper.keys": secrets.token_hex(32),
    }
    oauth = {"client-id": realm.client_id, "client-secret": realm.client_secret}
    return [secret("hub", chart), secret("aiinfn-hub-oauth", oauth)]


async def apply_hub_account(api_client, namespace: str) -> None:
    """The ServiceAccount `hub` with the chart's Role and every shipped RBAC object bound to it,
    granted by RBAC before the hub starts (its start check asks for each permission)."""
    documents = hubaccount.hub_account_objects(hubaccount.load_helm_values(), namespace)
    for document in documents:
        await create_from_dict(api_client, document, namespace=namespace, apply=True)
    authorization = client.AuthorizationV1Api(api_client)
    for probe in hubaccount.access_probes(documents, namespace):
        body = {"spec": {"user": hubaccount.account_name(namespace), "resourceAttributes": probe}}

        async def granted(body=body):
            return (await authorization.create_subject_access_review(body)).status.allowed

        await wait_until(granted, f"RBAC to grant the hub account {probe}")


def allow_redirects(realm: Realm, url: str) -> None:
    """Let the provider send users back to the hub at its pod IP."""
    status, found = realm.admin("GET", f"/clients?clientId={urllib.parse.quote(realm.client_id)}")
    assert status == 200 and len(found) == 1, found
    body = {**found[0], "redirectUris": [*found[0]["redirectUris"], f"{url}/*"]}
    status, answer = realm.admin("PUT", f"/clients/{found[0]['id']}", body)
    assert status == 204, answer


async def hub_pod(core, namespace: str) -> client.V1Pod | None:
    pods = await core.list_namespaced_pod(namespace, label_selector=HUB_SELECTOR)
    return next((p for p in pods.items if not p.metadata.deletion_timestamp), None)


async def ready_hub_pod(core, namespace: str) -> client.V1Pod | None:
    pod = await hub_pod(core, namespace)
    statuses = (pod.status.container_statuses or []) if pod else []
    return pod if statuses and statuses[0].ready else None


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


async def pod_log(core, namespace: str, name: str) -> str:
    try:
        response = await core.read_namespaced_pod_log(name, namespace, _preload_content=False)
    except ApiException as error:
        return f"(no log: {error.status})"
    try:
        return (await response.read()).decode(errors="replace")
    finally:
        response.release()


@dataclass
class InClusterHub:
    url: str
    namespace: str
    pod: client.V1Pod = field(repr=False)
    realm: Realm = field(repr=False)  # holds the client secret and the passwords


async def start_hub(api_client, core, namespace: str, realm: Realm, proxy: str) -> client.V1Pod:
    """The Secrets, the ConfigMap and the Deployment; the hub pod once it is ready."""
    for body in hub_secrets(realm):
        await core.create_namespaced_secret(namespace, body)
    await core.create_namespaced_config_map(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "hub"},
            "data": {"jupyterhub_config.py": site_config(realm.issuer, proxy)},
        },
    )
    await client.AppsV1Api(api_client).create_namespaced_deployment(namespace, hub_deployment())
    try:
        return await wait_until(
            lambda: ready_hub_pod(core, namespace), "the hub pod to be ready", START_LIMIT
        )
    except AssertionError:
        pod = await hub_pod(core, namespace)
        print(await pod_log(core, namespace, pod.metadata.name) if pod else "(no hub pod)")
        raise


async def stop_hub(api_client, core, namespace: str) -> None:
    """Delete the Deployment and wait for its pod, and so the hub's processes, to be gone."""
    try:
        await client.AppsV1Api(api_client).delete_namespaced_deployment(
            "hub", namespace, propagation_policy="Foreground"
        )
    except ApiException as error:
        if error.status != 404:
            raise

    async def no_hub_pods():
        return not (await core.list_namespaced_pod(namespace, label_selector=HUB_SELECTOR)).items

    await wait_until(no_hub_pods, "the hub pod to be gone", limit=90)


@pytest_asyncio.fixture(loop_scope="session")
async def incluster_hub(
    request, proxy, api_client, core, namespace, storage, local_queues, keycloak
):
    realm = await asyncio.to_thread(make_realm, keycloak, f"inhub-{namespace}", USERS)
    await apply_hub_account(api_client, namespace)
    try:
        pod = await start_hub(api_client, core, namespace, realm, proxy)
        url = f"http://{pod.status.pod_ip}:{PROXY_PORT}"
        # Ready is the hub's own port answering; the proxy gets the hub's route a moment later.
        await wait_until(
            lambda: asyncio.to_thread(answers, f"{url}/hub/health"), "the proxy to route to the hub"
        )
        await asyncio.to_thread(allow_redirects, realm, url)
        yield InClusterHub(url, namespace, pod, realm)
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            print(f"--- hub log ---\n{await pod_log(core, namespace, pod.metadata.name)}")
    finally:
        await stop_hub(api_client, core, namespace)
        await hubaccount.delete_cluster_objects(api_client, namespace)


# -- the user's side: a browser and their token ---------------------------------------------------


def open_page(
    login: Login, url: str, data: bytes | None = None, headers: dict | None = None
) -> tuple[int, str]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with login.browser.open(request, timeout=60) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def accelerator_block(page: str, key: str) -> str:
    return page.split(f'data-accelerator="{key}"', 1)[1].split('class="aiinfn-choice', 1)[0]


def free_on_form(page: str, key: str) -> tuple[int, int] | None:
    """(free, total) the spawn form shows for one accelerator, None while loading."""
    match = re.search(r'data-free="(\d*)" data-total="(\d*)"', accelerator_block(page, key))
    return (int(match[1]), int(match[2])) if match and match[1] else None


def api(url: str, token: str, method: str = "GET", body: dict | None = None) -> tuple[int, dict]:
    """A REST call with the user's own token, through the hub's proxy."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Authorization": f"token {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        text = error.read()
        try:
            return error.code, json.loads(text)
        except ValueError:
            return error.code, {"raw": text.decode(errors="replace")}


def new_token(hub: InClusterHub, login: Login, xsrf: str) -> str:
    """A token the user makes for themself (as the hub's token page does)."""
    body = json.dumps({"note": "in-cluster test", "expires_in": 3600}).encode()
    status, text = open_page(
        login,
        f"{hub.url}/hub/api/users/alice/tokens",
        body,
        {"X-XSRFToken": xsrf, "Content-Type": "application/json"},
    )
    assert status == 201, text
    return json.loads(text)["token"]


async def form_shows(
    hub: InClusterHub, login: Login, key: str, expected: tuple[int, int], path: str = "/hub/spawn"
) -> str | None:
    status, page = await asyncio.to_thread(open_page, login, f"{hub.url}{path}")
    assert status == 200, page[:500]
    return page if free_on_form(page, key) == expected else None


async def spawn_from_form(hub: InClusterHub, login: Login, page: str, key: str) -> str:
    """Submit the spawn form for one accelerator with its default environment; the xsrf token."""
    action = re.search(r'id="spawn_form"\s+action="([^"]+)"', page)[1]
    environment = re.search(r'<option value="([^"]+)" selected>', accelerator_block(page, key))[1]
    form = urllib.parse.urlencode({"accelerator": key, f"environment--{key}": environment})
    status, text = await asyncio.to_thread(
        open_page, login, urllib.parse.urljoin(hub.url, action), form.encode()
    )
    assert status == 200, text[:1000]
    return urllib.parse.parse_qs(urllib.parse.urlsplit(action).query)["_xsrf"][0]


# -- the test -------------------------------------------------------------------------------------


async def test_the_hub_runs_in_cluster_and_a_user_logs_in_spawns_a_gpu_server_and_submits_a_job(
    incluster_hub, core
):
    hub = incluster_hub
    spec = hub.pod.spec
    assert spec.service_account_name == "hub"
    assert any(v.projected and v.name.startswith("kube-api-access-") for v in spec.volumes)
    assert not any(e.name == "KUBECONFIG" for e in spec.containers[0].env)
    login = await asyncio.to_thread(browser_login, hub.url, "alice", hub.realm.passwords["alice"])
    assert (login.status, urllib.parse.urlsplit(login.url).path) == (200, "/hub/home"), login.url

    # Live counts: the farm's eight T4s free (the hub's own watch of the cluster, its RBAC's).
    page = await wait_until(
        lambda: form_shows(hub, login, "t4", (8, 8)), "the form to show 8 of 8 T4s free"
    )
    xsrf = await spawn_from_form(hub, login, page, "t4")
    token = await asyncio.to_thread(new_token, hub, login, xsrf)
    try:
        await _server_runs_on_a_t4(hub, core, login, token)
        await _job_runs(hub, token)
        await _backup_service_answers(hub, token)
    finally:
        await asyncio.to_thread(api, f"{hub.url}/hub/api/users/alice/server", token, "DELETE")


async def _server_runs_on_a_t4(hub: InClusterHub, core, login: Login, token: str) -> None:
    async def ready():
        status, model = await asyncio.to_thread(api, f"{hub.url}/hub/api/users/alice", token)
        assert status == 200, model
        server = (model.get("servers") or {}).get("", {})
        return server if server.get("ready") else None

    await wait_until(ready, "alice's GPU server to be ready", START_LIMIT)
    pods = await core.list_namespaced_pod(
        hub.namespace, label_selector=f"{labels.PREFIX}/accelerator=t4"
    )
    assert len(pods.items) == 1
    pod = pods.items[0]
    assert pod.spec.node_name == "server1-t4"
    assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    # The hub reaches the notebook at its pod IP; so does the user, through the proxy.
    status, answer = await asyncio.to_thread(api, f"{hub.url}/user/alice/api/status", token)
    assert status == 200, answer
    # The form for a second server shows alice's T4 taken.
    await wait_until(
        lambda: form_shows(hub, login, "t4", (7, 8), "/hub/spawn/alice/second"),
        "the form to show one T4 fewer",
    )


async def _job_runs(hub: InClusterHub, token: str) -> None:
    jobs = f"{hub.url}/services/jobs/api/jobs"
    status, job = await asyncio.to_thread(
        api,
        jobs,
        token,
        "POST",
        {"name": "hello", "command": ["python", "-c", "print('hello from a job')"]},
    )
    assert status == 201, job

    async def succeeded():
        status, current = await asyncio.to_thread(api, f"{jobs}/{job['id']}", token)
        assert status == 200 and current["state"] not in ("failed", "cancelled"), current
        return current if current["state"] == "succeeded" else None

    done = await wait_until(succeeded, "the job to be admitted and to succeed", START_LIMIT)
    assert done["admission"]["cluster_queue"] == "project-cms-2dml"
    status, logs = await asyncio.to_thread(api, f"{jobs}/{job['id']}/logs?tail=10", token)
    assert status == 200 and logs["pods"][0]["log"] == "hello from a job\n", logs


async def _backup_service_answers(hub: InClusterHub, token: str) -> None:
    """The backup service runs beside the hub as 45-backup.py registers it, behind the proxy;
    alice's token reaches it (the `user` role) and, with the hub's account (the shipped RBAC),
    it reads the keys Secret: no repository of hers yet, so no archives and no Job."""
    backup = f"{hub.url}/services/backup/"
    status, health = await asyncio.to_thread(api, f"{backup}health", token)
    assert (status, health) == (200, {"status": "ok"})
    status, answer = await asyncio.to_thread(
        api, f"{backup}api/repositories/home/alice/archives", token
    )
    assert (status, answer) == (200, {"archives": []})
