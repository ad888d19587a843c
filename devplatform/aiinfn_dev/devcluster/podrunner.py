"""The dev cluster's pod runner: pods whose image is a local environment really run here.

kwok plays every node, but its pod stages skip pods whose first container's image is in the
runner's image map (`components.RUNNER_IMAGE_KEY`); this process plays the kubelet for those. It
list-then-watches scheduled pods (the product's `k8s_watch.ListWatch`: resourceVersion, bookmarks,
relist on 410, bounded back-off) and gives each of its pods on a kwok node a `PodWorker`
(podworker.py), which runs the containers as sandboxed local processes (sandbox.py) and reports
them as a kubelet would.
Container output goes to CRI log files that kwok's kubelet endpoint serves to `kubectl logs`
through one kwok `Logs` object per pod.

Started and stopped by `DevCluster` like the other components:
`python -m aiinfn_dev.devcluster.podrunner --config pod-runner.json`. Pure decisions are in
podplan.py and podstatus.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import sys
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client

from aiinfn_hub import catalog, k8s, labels
from aiinfn_hub.k8s_watch import ListWatch
from aiinfn_hub.services.backup import image as backup_image_ref

from . import podplan, podstatus, sandbox
from .components import PLAYED_BY_ANNOTATION, POD_CIDR
from .podplan import LocalImage
from .podworker import PodWorker, now, stop_processes

log = logging.getLogger("aiinfn_dev.devcluster.podrunner")

KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
SCHEDULED = "spec.nodeName!="
LOGS_GROUP, LOGS_VERSION, LOGS_PLURAL = "kwok.x-k8s.io", "v1alpha1", "logs"
READY_MARKER = "ready"
WATCH_SECONDS = 300


@dataclass(frozen=True)
class Settings:
    """The runner's configuration file (written by DevCluster)."""

    kubeconfig: str
    state: str
    images: dict[str, LocalImage]
    host_paths: list[str]
    ip_claims: str
    # The API server's "HOST:PORT" on the loopback: what the `kubernetes` Service's variables say.
    api_server: str = ""
    volume_sync_seconds: float = 5.0
    shutdown_grace_seconds: float = 5.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Settings:
        data = json.loads(text)
        data["images"] = {k: LocalImage.from_dict(v) for k, v in data["images"].items()}
        return cls(**data)


def notebook_env_problem(prefix: Path) -> str | None:
    """Why prefix cannot serve as the notebook environment, or None if it can."""
    if not (prefix / "bin" / "jupyterhub-singleuser").exists():
        return (
            f"no notebook environment at {prefix} "
            "(./dev makes it; AIINFN_NOTEBOOK_ENV points elsewhere)"
        )
    return None


def hub_env_problem(prefix: Path) -> str | None:
    """Why prefix cannot play the hub image, or None if it can."""
    if not (prefix / "bin" / "jupyterhub").exists():
        return f"no hub environment at {prefix} (./dev makes it; {HUB_ENV} points elsewhere)"
    return None


HUB_CONFIG_DIR = "/usr/local/etc/jupyterhub"


def hub_image_name(values: Path) -> str:
    """The hub image (images/hub/Dockerfile) as the chart's values name it (hub.image)."""
    image = yaml.safe_load(values.read_text())["hub"]["image"]
    return f"{image['name']}:{image['tag']}"


def hub_image(prefix: Path, source_root: Path) -> LocalImage:
    """z2jh's hub image (quay.io/jupyterhub/k8s-hub, which images/hub/Dockerfile extends) played
    by the hub environment: user jovyan (1000:1000), WORKDIR /srv/jupyterhub, the chart's command
    `jupyterhub --config .../jupyterhub_config.py`, and the platform's jupyterhub_config.d where
    z2jh's configuration loads it from. Its ENTRYPOINT (tini) is left out: the hub is PID 1."""
    return LocalImage(
        prefix=str(prefix),
        cmd=("jupyterhub", "--config", f"{HUB_CONFIG_DIR}/jupyterhub_config.py"),
        user="jovyan",
        uid=1000,
        gid=1000,
        group="jovyan",
        home="/home/jovyan",
        base="python",
        workdir="/srv/jupyterhub",
        files=(
            (f"{HUB_CONFIG_DIR}/jupyterhub_config.d", str(source_root / "jupyterhub_config.d")),
        ),
    )


BORG = Path("/usr/bin/borg")


def backup_image_problem(borg: Path = BORG) -> str | None:
    """Why the backup image cannot be played here (it needs Debian's borg 1.2), or None."""
    if not borg.exists():
        return f"no {borg} (./dev installs Debian's borgbackup)"
    return None


def backup_image() -> LocalImage:
    """The backup image (images/backup/Dockerfile: Debian's borg 1.2 and sh) played by this
    machine's Debian system, which has the same borg at the same path: user nobody, WORKDIR /,
    Debian's PATH, Debian's default command."""
    return LocalImage(
        prefix="",
        cmd=("bash",),
        user="nobody",
        uid=backup_image_ref.UID,
        gid=backup_image_ref.GID,
        group="nogroup",
        home="/nonexistent",
        base="debian",
        workdir="/",
    )


def _env_paths(prefix: Path) -> list[str]:
    """An environment and the Python installation it runs on."""
    cfg = prefix / "pyvenv.cfg"
    return [str(prefix), *podplan.base_python_dirs(cfg.read_text() if cfg.exists() else "")]


def settings_for(
    kubeconfig: Path,
    state: Path,
    notebook_env: Path,
    catalog_path: Path,
    source_root: Path,
    ip_claims: Path,
    hub_env: Path | None = None,
    api_server: str = "",
    backup: bool = False,
) -> Settings:
    """Every environment image of the catalog played by the notebook environment with the
    images' Jupyter configuration, the hub image of helm-values/values.yaml by the hub
    environment if given, the backup image by this system if asked; the host folders they need
    (their Pythons, this checkout for the editable install and the images' configuration) shown
    read-only."""
    jupyter_config = str(source_root / "images" / "notebook" / "jupyter")
    images = {
        env.image: LocalImage(prefix=str(notebook_env), jupyter_config=jupyter_config)
        for env in catalog.load(catalog_path).environments.values()
    }
    extra = [str(source_root), *_env_paths(notebook_env)]
    if hub_env is not None:
        images[hub_image_name(source_root / HUB_VALUES)] = hub_image(hub_env, source_root)
        extra += _env_paths(hub_env)
    if backup:
        images[backup_image_ref.IMAGE] = backup_image()
    return Settings(
        str(kubeconfig), str(state), images, podplan.host_paths(extra), str(ip_claims), api_server
    )


SOURCE_ROOT = Path(__file__).resolve().parents[3]
HUB_VALUES = Path("helm-values", "values.yaml")
NOTEBOOK_ENV = "AIINFN_NOTEBOOK_ENV"
HUB_ENV = "AIINFN_HUB_ENV"
SWITCH = "AIINFN_POD_RUNNER"  # "off": every pod simulated, for runs that need no real process


def api_server_address(kubeconfig: Path) -> str:
    """The API server's "HOST:PORT", from the runner's kubeconfig."""
    server = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    return urllib.parse.urlsplit(server).netloc


def for_cluster(
    root: Path, kubeconfig: Path, say: Callable[[str], None] = log.info
) -> tuple[Settings | None, str | None]:
    """The runner's settings for a dev cluster in root, or None and why it stays off (no
    notebook environment, no user namespaces): then kwok simulates every pod. Without a hub
    environment the hub image stays simulated too (`say` tells why)."""
    if os.environ.get(SWITCH) == "off":
        return None, f"{SWITCH}=off"
    env = Path(os.environ.get(NOTEBOOK_ENV) or SOURCE_ROOT / ".venv-notebook").absolute()
    problem = notebook_env_problem(env)
    if problem is None:
        problem = sandbox.probe(str(root / "sandbox-probe"))
        shutil.rmtree(root / "sandbox-probe", ignore_errors=True)
    if problem:
        return None, problem
    hub_env: Path | None = Path(os.environ.get(HUB_ENV) or SOURCE_ROOT / ".venv-hub").absolute()
    hub_problem = hub_env_problem(hub_env)
    if hub_problem:
        say(f"pod runner: the hub image stays simulated: {hub_problem}")
        hub_env = None
    backup_problem = backup_image_problem()
    if backup_problem:
        say(f"pod runner: the backup image stays simulated: {backup_problem}")
    # Every dev cluster of this cache (<cache>/clusters/<name>) shares one record of pod IPs.
    claims = root.parent.parent / "pod-ips"
    return settings_for(
        kubeconfig,
        root / "pods",
        env,
        catalog.default_path(),
        SOURCE_ROOT,
        claims,
        hub_env,
        api_server_address(kubeconfig),
        backup_problem is None,
    ), None


class IpClaims:
    """Pod IPs held by the pod runners of this machine: every dev cluster uses the same node
    ranges and their processes really bind the addresses, so one file per address, made
    exclusively, names the runner that holds it (pid and start time, so a reused pid is not
    taken for the runner); a dead runner's claims are taken over."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.mine: set[str] = set()
        self.holder = {"pid": os.getpid(), "started": process_start(os.getpid())}
        folder.mkdir(parents=True, exist_ok=True)
        for path in folder.iterdir():  # left by runners that were killed
            if not self._holder_alive(path):
                path.unlink(missing_ok=True)

    def claim(self, ip: str, owner: str) -> bool:
        path = self.folder / ip
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._holder_alive(path):
                    return False
                path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps({**self.holder, "pod": owner}))
            self.mine.add(ip)
            return True
        return False

    def release(self, ip: str) -> None:
        if ip in self.mine:
            self.mine.discard(ip)
            (self.folder / ip).unlink(missing_ok=True)

    def release_all(self) -> None:
        for ip in list(self.mine):
            self.release(ip)

    @staticmethod
    def _holder_alive(path: Path) -> bool:
        try:
            holder = json.loads(path.read_text())
            return process_start(int(holder["pid"])) == holder["started"]
        except (ValueError, KeyError, TypeError):
            return False


def plays_on(node: Mapping[str, Any]) -> bool:
    """Whether the runner plays pods bound to this node: a kwok node that is not a remote site's
    virtual node (kwok's per-site stages play those, with the site's latency and failures)."""
    meta = node.get("metadata") or {}
    return (meta.get("annotations") or {}).get(KWOK_NODE_ANNOTATION) == "fake" and (
        meta.get("labels") or {}
    ).get(labels.INTERLINK_NODE) != labels.VIRTUAL_NODE_VALUE


def given_to_kwok(pod: Mapping[str, Any]) -> bool:
    """Whether kwok plays the pod although the runner knows its image (PLAYED_BY_ANNOTATION)."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return annotations.get(PLAYED_BY_ANNOTATION) == "kwok"


def process_start(pid: int) -> int | None:
    """When a process started (clock ticks since boot, /proc/PID/stat field 22); None if it is
    gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


class PodRunner:
    """Watches scheduled pods and keeps one PodWorker per runner pod."""

    def __init__(self, settings: Settings, api_client: client.ApiClient) -> None:
        self.settings = settings
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.workers: dict[str, PodWorker] = {}
        # uid -> (node, pod IP) of every scheduled pod, so a new runner pod gets a free address.
        self.pod_ips: dict[str, tuple[str, str]] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        self.claims = IpClaims(Path(settings.ip_claims))
        self.watch = ListWatch(
            "pod runner: scheduled pods",
            self.core.list_pod_for_all_namespaces,
            self._relisted,
            self.handle,
            field_selector=SCHEDULED,
            watch_timeout=WATCH_SECONDS,
            logger=log,
        )
        self.tasks: set[asyncio.Task] = set()

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- API calls (raw JSON: the runner works on dicts) ----------------------------------------

    async def _retrying(
        self,
        what: str,
        method: Callable[..., Awaitable[Any]],
        *args: Any,
        tolerate: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> int:
        """Call until the API server answers (retrying 5xx and network errors, a few times);
        200 for any success, the status of an error (those in tolerate are not logged), 0 when
        it never answered."""
        for attempt in range(1, 6):
            try:
                await k8s.call_json(method(*args, _preload_content=False, **kwargs))
                return 200
            except k8s.ApiError as error:
                if error.status in tolerate:
                    return error.status
                log.warning("%s: %s %s", what, error.status, error.message)
                if (error.status or 0) < 500:
                    return error.status or 0
            except k8s.TRANSIENT as error:
                log.warning("%s failed (attempt %d): %s", what, attempt, error)
            await asyncio.sleep(k8s.backoff_delay(attempt, 0.2, 5.0))
        return 0

    async def patch_status(self, pod: dict[str, Any], patch: dict[str, Any]) -> None:
        meta = pod["metadata"]
        await self._retrying(
            f"status of {meta['namespace']}/{meta['name']}",
            self.core.patch_namespaced_pod_status,
            meta["name"],
            meta["namespace"],
            patch,
            tolerate=(404,),
        )

    async def post_event(self, body: dict[str, Any]) -> None:
        namespace = body["metadata"]["namespace"]
        await self._retrying(
            "event", self.core.create_namespaced_event, namespace, body, tolerate=(404,)
        )

    async def put_logs(self, pod: dict[str, Any], files: dict[str, tuple[str, str | None]]) -> None:
        """Point kwok's kubelet endpoint at the pod's log files."""
        body = podstatus.logs_object(pod, files)
        meta = body["metadata"]
        status = await self._retrying(
            "logs object",
            self.custom.create_namespaced_custom_object,
            LOGS_GROUP,
            LOGS_VERSION,
            meta["namespace"],
            LOGS_PLURAL,
            body,
            tolerate=(409,),
        )
        if status == 409:
            await self._retrying(
                "logs object",
                self.custom.patch_namespaced_custom_object,
                LOGS_GROUP,
                LOGS_VERSION,
                meta["namespace"],
                LOGS_PLURAL,
                meta["name"],
                {"spec": body["spec"]},
                _content_type="application/merge-patch+json",
            )

    async def delete_pod(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        await self._retrying(
            f"delete {meta['namespace']}/{meta['name']}",
            self.core.delete_namespaced_pod,
            meta["name"],
            meta["namespace"],
            grace_period_seconds=0,
            body={"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}},
            tolerate=(404, 409),
        )

    async def _get(
        self, method: Callable[..., Awaitable[Any]], *args: Any
    ) -> dict[str, Any] | None:
        try:
            return await k8s.call_json(method(*args, _preload_content=False))
        except k8s.ApiError as error:
            if error.status == 404:
                return None
            raise podplan.MountError(f"reading {args[0]}: {error}") from None

    async def fetch_objects(
        self, pod: dict[str, Any], tokens: Mapping[str, str]
    ) -> podplan.Objects:
        """The Secrets, ConfigMaps and claims (with their PV's host folder) the pod names, and
        the service account tokens it asks for (those in tokens are kept)."""
        namespace = pod["metadata"]["namespace"]
        secrets, config_maps, claims = podplan.references(pod)
        found_secrets, found_maps, found_claims = {}, {}, {}
        for name in secrets:
            obj = await self._get(self.core.read_namespaced_secret, name, namespace)
            found_secrets[name] = podplan.decode_data(obj, secret=True) if obj else None
        for name in config_maps:
            obj = await self._get(self.core.read_namespaced_config_map, name, namespace)
            found_maps[name] = podplan.decode_data(obj, secret=False) if obj else None
        for name in claims:
            claim = await self._get(
                self.core.read_namespaced_persistent_volume_claim, name, namespace
            )
            volume_name = (claim or {}).get("spec", {}).get("volumeName")
            volume = (
                await self._get(self.core.read_persistent_volume, volume_name)
                if volume_name
                else None
            )
            try:
                found_claims[name] = podplan.claim_path(claim, volume)
            except podplan.MountError as error:
                found_claims[name] = str(error)
        issued = dict(tokens)
        for audience, lifetime in podplan.token_audiences(pod).items():
            if audience not in issued:
                issued[audience] = await self._token(pod, audience, lifetime)
        return podplan.Objects(found_secrets, found_maps, found_claims, issued)

    async def _token(self, pod: dict[str, Any], audience: str, lifetime: int) -> str:
        """A TokenRequest bound to the pod, as the kubelet makes for projected tokens."""
        meta = pod["metadata"]
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [audience] if audience else [],
                "expirationSeconds": lifetime,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        account = pod["spec"].get("serviceAccountName") or "default"
        try:
            answer = await k8s.call_json(
                self.core.create_namespaced_service_account_token(
                    account, meta["namespace"], body, _preload_content=False
                )
            )
        except k8s.ApiError as error:
            raise podplan.MountError(f"token for service account {account!r}: {error}") from None
        return answer["status"]["token"]

    async def node(self, name: str) -> dict[str, Any] | None:
        if name not in self.nodes:
            node = await self._get(self.core.read_node, name)
            if node is None:
                return None
            self.nodes[name] = node
        return self.nodes[name]

    def allocate_ip(self, pod: dict[str, Any], node: dict[str, Any]) -> str:
        """A free address of the node's range: not used in this cluster, not held by another."""
        name = node["metadata"]["name"]
        cidr = node.get("spec", {}).get("podCIDR") or POD_CIDR
        taken = {ip for n, ip in self.pod_ips.values() if n == name}
        while True:
            ip = podplan.pick_pod_ip(cidr, taken)
            if self.claims.claim(ip, pod["metadata"]["uid"]):
                self.pod_ips[pod["metadata"]["uid"]] = (name, ip)
                return ip
            taken.add(ip)

    def release_ip(self, ip: str) -> None:
        """The pod's processes are gone: other clusters may use its address."""
        self.claims.release(ip)

    # -- pods --------------------------------------------------------------------------------

    async def handle(self, event_type: str, pod: dict[str, Any]) -> None:
        """One pod event: start, follow, stop or forget the pod's worker."""
        meta, status = pod["metadata"], pod.get("status") or {}
        uid = meta["uid"]
        if event_type == "DELETED":
            self.pod_ips.pop(uid, None)
            worker = self.workers.pop(uid, None)
            if worker:
                self._spawn(worker.kill())
            return
        node_name = pod.get("spec", {}).get("nodeName", "")
        if status.get("podIP") and uid not in self.workers:
            self.pod_ips[uid] = (node_name, status["podIP"])
        worker = self.workers.get(uid)
        if worker:
            worker.pod = pod
            if meta.get("deletionTimestamp"):
                self._spawn(worker.terminate())
            return
        if podplan.runner_image(pod) not in self.settings.images or given_to_kwok(pod):
            return
        node = await self.node(node_name)
        if node is None or not plays_on(node):
            return
        if meta.get("deletionTimestamp"):
            self._spawn(self.delete_pod(pod))
        elif status.get("phase", "Pending") == "Pending":
            worker = PodWorker(self, pod, node)
            self.workers[uid] = worker
            worker.start()
        elif status.get("phase") == "Running":
            self._spawn(self._lost(pod))

    async def _lost(self, pod: dict[str, Any]) -> None:
        """A pod started by an earlier runner whose processes are gone: report them lost, as a
        kubelet does for containers it cannot find."""
        statuses = [
            podstatus.terminated(
                c, 137, now(), reason="ContainerStatusUnknown", message=podstatus.LOST_MESSAGE
            )
            for c in pod["spec"]["containers"]
        ]
        status = pod.get("status") or {}
        patch = podstatus.status_patch(
            pod,
            "Failed",
            [],
            statuses,
            status.get("podIP", ""),
            status.get("hostIP", ""),
            status.get("startTime") or now(),
            now(),
        )
        await self.patch_status(pod, patch)

    # -- list, then watch --------------------------------------------------------------------

    async def run(self) -> None:
        """Follow scheduled pods until cancelled."""
        await self.watch.run()

    async def _relisted(self, pods: list[dict[str, Any]], version: str) -> None:
        """A full list: forget the pods that are gone, take up the others as if modified."""
        seen = {p["metadata"]["uid"] for p in pods}
        for uid in [u for u in self.workers if u not in seen]:
            await self.handle("DELETED", {"metadata": {"uid": uid}})
        for pod in pods:
            await self.handle("MODIFIED", pod)
        marker = Path(self.settings.state) / READY_MARKER
        if not marker.exists():
            marker.write_text(f"listed {len(pods)} scheduled pods\n")
            log.info("pod runner ready: %d images played locally", len(self.settings.images))

    async def shutdown(self) -> None:
        """The cluster is going down: stop every process (no status reports)."""
        workers = list(self.workers.values())
        for worker in workers:
            worker.stopping = True
        running = [dict(w.processes) for w in workers]
        for worker in workers:
            await worker.cancel_lifecycle()
        await asyncio.gather(
            *(stop_processes(p, self.settings.shutdown_grace_seconds) for p in running)
        )
        for task in list(self.tasks):
            task.cancel()
        self.claims.release_all()


async def _serve(settings: Settings) -> None:
    api = await k8s.api_client(settings.kubeconfig)
    async with api:
        runner = PodRunner(settings, api)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        watcher = asyncio.create_task(runner.run())
        await stop.wait()
        watcher.cancel()
        await runner.shutdown()
        log.info("pod runner stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aiinfn-pod-runner", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path, help="the runner's settings (JSON)")
    args = parser.parse_args(argv)
    settings = Settings.from_json(args.config.read_text())
    Path(settings.state).mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    asyncio.run(_serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
