"""A real JupyterHub process on the dev cluster, configured from the repository's config files.

Test-only pieces, all in the generated config, none in production code: users log in with the
demo login (which gives them their groups), a service token with the admin role drives the REST
API, and the notebook
URL points at a local responder (a stand-in for jupyterhub-singleuser until pods really run),
so a server becomes ready and stays up while its pod holds the accelerator.

The hub talks to Kubernetes as an installation's hub does: as the ServiceAccount `hub` of the
namespace it spawns into, with the shipped RBAC only (aiinfn_dev.hubaccount.hub_kubeconfig);
start_hub refuses any other kubeconfig, so a permission the product lacks fails a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import http.server
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from aiinfn_dev import devstorage, hubaccount, kueue_config
from aiinfn_dev.demo_auth import DEMO_MODE_ENV
from aiinfn_dev.devcluster.components import PLAYED_BY_ANNOTATION
from aiinfn_dev.devcluster.processes import free_port
from kubernetes_asyncio import client

from aiinfn_hub import labels
from aiinfn_hub.platform_config import AiInfnPlatform
from tests.helpers import has_default_service_account, wait_until

REPO = Path(__file__).resolve().parent.parent
# Seconds a test hub may take to answer: a few on a quiet machine, far more on a loaded one.
HUB_START_LIMIT = 180


class _Responder(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@dataclass
class Hub:
    url: str
    token: str
    namespace: str
    kubeconfig: Path  # the hub account's (the job service beside it uses it too)
    process: subprocess.Popen
    log_path: Path
    password: str
    browsers: dict
    # claim name -> the local folder behind it (hub_in_namespace's storage)
    storage_folders: dict[str, Path] = field(default_factory=dict)

    def login(self, user: str) -> None:
        """Log in through the real form; the user's groups come with the login."""
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        page = opener.open(f"{self.url}/hub/login").read().decode()
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page).group(1)
        form = urllib.parse.urlencode(
            {"_xsrf": xsrf, "username": user, "password": self.password}
        ).encode()
        opener.open(f"{self.url}/hub/login", data=form).read()
        self.browsers[user] = opener

    def request(
        self, method: str, path: str, body=None, token: str | None = None
    ) -> tuple[int, dict | str]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"{self.url}/hub/api{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {token or self.token}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                text = response.read().decode()
                return response.status, json.loads(text) if text else {}
        except urllib.error.HTTPError as error:
            text = error.read().decode()
            try:
                return error.code, json.loads(text)
            except json.JSONDecodeError:
                return error.code, text

    def events(self, path: str, token: str | None = None) -> list[dict]:
        """The data of a REST API event stream (a spawn's progress) until the hub ends it."""
        req = urllib.request.Request(
            f"{self.url}/hub/api{path}",
            headers={
                "Authorization": f"token {token or self.token}",
                "Accept": "text/event-stream",
            },
        )
        with urllib.request.urlopen(req, timeout=180) as response:
            lines = response.read().decode().splitlines()
        return [json.loads(line[len("data:") :]) for line in lines if line.startswith("data:")]

    def page(self, path: str, user: str) -> tuple[int, str]:
        """A hub page as the logged-in user's browser sees it."""
        try:
            with self.browsers[user].open(f"{self.url}{path}", timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def own_log_tail(self, characters: int = 3000) -> str:
        """The end of the log without the proxy's lines (while the hub starts, the proxy logs a
        404 and a stack for every poll, which would hide why the hub stopped)."""
        kept, proxy = [], False
        for line in self.log().splitlines():
            if "[ConfigProxy]" in line:
                proxy = True
            elif proxy and (line.startswith((" ", "}")) or not line.strip()):
                continue
            else:
                proxy = False
                kept.append(line)
        return "\n".join(kept)[-characters:]


def require_hub_account(kubeconfig: Path, namespace: str) -> None:
    """Refuse a kubeconfig that is not the ServiceAccount `hub` of `namespace` (the cluster
    admin's, above all: a hub running as admin hides every permission the RBAC lacks)."""
    subject = hubaccount.token_subject(yaml.safe_load(kubeconfig.read_text()))
    wanted = hubaccount.account_name(namespace)
    if subject != wanted:
        raise ValueError(
            f"a test hub runs as {wanted} (aiinfn_dev.hubaccount.hub_kubeconfig), "
            f"not as {subject or 'a user without a service-account token'}"
        )


def section(setting: str) -> str:
    """The config section of a spawner-side setting: the platform's shared ones, else the
    spawner's."""
    return (
        "AiInfnPlatform"
        if setting in AiInfnPlatform.class_own_traits(config=True)
        else "AiInfnSpawner"
    )


# Config lines for a hub whose tests need its servers' pods only Running and Ready: kwok plays
# them instead of the pod runner's real notebook servers, which nothing would talk to (the
# stand-in answers for every server) and which cost about 2 CPU-seconds each to start.
KWOK_PLAYED = {PLAYED_BY_ANNOTATION: "kwok"}
KWOK_NOTEBOOKS = (f"c.KubeSpawner.extra_annotations = {KWOK_PLAYED!r}",)


def start_hub(
    tmp: Path,
    kubeconfig: Path,
    namespace: str,
    users: dict[str, dict],
    spawner_config: dict[str, object],
    extra_config: Sequence[str] = (),
    env_extra: dict[str, str] | None = None,
) -> tuple[Hub, http.server.HTTPServer]:
    """Start JupyterHub and a notebook stand-in; stop them with stop_hub.

    `extra_config` lines come last in the generated config, so they override the rest (another
    authenticator, more services); `users` are logged in through the demo form if non-empty.
    `kubeconfig` is the hub account's of `namespace` (require_hub_account).
    """
    require_hub_account(kubeconfig, namespace)
    responder = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Responder)
    threading.Thread(target=responder.serve_forever, daemon=True).start()
    token, password = secrets.token_hex(32), secrets.token_urlsafe(16)
    port, hub_port, proxy_api = free_port(), free_port(), free_port()
    lines = [
        f"load_subconfig({str(REPO / 'jupyterhub_config.py')!r})",
        f"c.JupyterHub.bind_url = 'http://127.0.0.1:{port}'",
        f"c.JupyterHub.hub_bind_url = 'http://127.0.0.1:{hub_port}'",
        f"c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:{proxy_api}'",
        f"c.JupyterHub.db_url = 'sqlite:///{tmp / 'hub.sqlite'}'",
        f"c.JupyterHub.cookie_secret_file = {str(tmp / 'cookie_secret')!r}",
        f"c.ConfigurableHTTPProxy.pid_file = {str(tmp / 'proxy.pid')!r}",
        "c.JupyterHub.authenticator_class = 'aiinfn-demo'",
        f"c.DemoAuthenticator.demo_users = {users!r}",
        f"c.DemoAuthenticator.password = {password!r}",
        f"c.JupyterHub.services = [{{'name': 'tests', 'api_token': {token!r}}}]",
        "c.JupyterHub.load_roles = [{'name': 'admin', 'services': ['tests']}]",
        f"c.KubeSpawner.namespace = {namespace!r}",
        f"c.KubeSpawner.get_pod_url = lambda spawner, pod: 'http://127.0.0.1:{responder.server_address[1]}'",
        "c.KubeSpawner.http_timeout = 20",
        "c.KubeSpawner.start_timeout = 60",
        *(f"c.{section(k)}.{k} = {v!r}" for k, v in spawner_config.items()),
        *extra_config,
    ]
    config = tmp / "jupyterhub_config.py"
    config.write_text("\n".join(lines) + "\n")
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        DEMO_MODE_ENV: "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        **(env_extra or {}),
    }
    if not shutil.which("configurable-http-proxy", path=env["PATH"]):
        raise RuntimeError("configurable-http-proxy is not on PATH: run the tests through ./dev")
    log_path = tmp / "hub.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(config)],
            cwd=tmp,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    hub = Hub(
        f"http://127.0.0.1:{port}", token, namespace, kubeconfig, process, log_path, password, {}
    )
    deadline = time.monotonic() + HUB_START_LIMIT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"JupyterHub exited: {hub.own_log_tail()}")
        try:
            if hub.request("GET", "/")[0] == 200:
                for user in users:
                    hub.login(user)
                return hub, responder
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.3)
    stop_hub(hub, responder)
    raise RuntimeError(f"JupyterHub did not start: {hub.own_log_tail()}")


def stop_hub(hub: Hub, responder: http.server.HTTPServer) -> None:
    """Stop the hub's whole process group (hub and proxy) by pid, and the responder."""
    if hub.process.poll() is None:
        os.killpg(hub.process.pid, signal.SIGTERM)
        try:
            hub.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(hub.process.pid, signal.SIGKILL)
            hub.process.wait()
    responder.shutdown()
    responder.server_close()


@contextlib.asynccontextmanager
async def hub_in_namespace(
    api_client: client.ApiClient,
    kubeconfig: Path,
    folder: Path,
    users: dict[str, dict],
    spawner_config: dict[str, object],
    extra_config: Sequence[str] = (),
    env_extra: dict[str, str] | None = None,
    kueue_documents: list[dict] | None = None,
    hub_kubeconfig: Callable[[Path], Path] | None = None,
) -> AsyncIterator[Hub]:
    """The integration modules' one hub: a fresh namespace enforcing Pod Security "restricted",
    helm-values/storage.yaml bound to local folders there (`hub.storage_folders`), the hub
    ServiceAccount with the shipped RBAC, and start_hub as that account; all of it removed on exit.
    With `kueue_documents` (the `kueue` fixture's), the projects' LocalQueues too, active.
    `kubeconfig` is the cluster admin's, used only to set all this up; `hub_kubeconfig` turns the
    hub account's kubeconfig into the one the hub uses (the fault drills' proxy in between)."""
    core = client.CoreV1Api(api_client)
    namespace = f"t-hub-{uuid.uuid4().hex[:8]}"
    restricted = {
        labels.POD_SECURITY_ENFORCE: "restricted",
        labels.POD_SECURITY_ENFORCE_VERSION: "latest",
    }
    metadata = client.V1ObjectMeta(name=namespace, labels=restricted)
    await core.create_namespace(client.V1Namespace(metadata=metadata))
    storage: list[dict] = []
    try:
        await wait_until(lambda: has_default_service_account(core, namespace), "service account")
        storage = await devstorage.setup(api_client, namespace, folder / "storage")
        await wait_until(
            lambda: devstorage.claims_bound(api_client, namespace, storage), "the storage claims"
        )
        if kueue_documents is not None:
            queues = kueue_config.local_queues(kueue_documents, namespace)
            await kueue_config.apply(api_client, queues)
            await wait_until(
                lambda: kueue_config.queues_active(api_client, queues), "LocalQueues active"
            )
        account = await hubaccount.hub_kubeconfig(
            api_client, namespace, kubeconfig, folder / "hub.kubeconfig"
        )
        if hub_kubeconfig is not None:
            account = hub_kubeconfig(account)
        hub, responder = await asyncio.to_thread(
            start_hub, folder, account, namespace, users, spawner_config, extra_config, env_extra
        )
        hub.storage_folders = devstorage.claim_folders(storage)
        try:
            yield hub
        finally:
            await asyncio.to_thread(stop_hub, hub, responder)
    finally:
        await core.delete_namespace(namespace)
        await hubaccount.delete_cluster_objects(api_client, namespace)
        await devstorage.delete_volumes(api_client, storage)
