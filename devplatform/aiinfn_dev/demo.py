"""`aiinfn-dev demo`: the platform on this machine, on the local dev cluster, with demo users.

It brings the dev cluster up (or reuses a running one), makes the demo namespace, writes a hub
configuration that loads the repository's jupyterhub_config.d/ and then the demo overrides, runs
JupyterHub at http://127.0.0.1:8000 and, on Ctrl-C, stops the hub and whatever it started itself.
The demo plays the admin installing the chart (with the cluster's admin kubeconfig); the hub, and
the job service it starts, run as the ServiceAccount `hub` with the shipped RBAC only.
Beside the hub, on the loopback (monitoring.py): a PostgreSQL with the hub's accounting ledger,
the storage exporter over the demo's storage folders, a stand-in DCGM exporter for the demo's
GPU pods, and a Prometheus scraping the hub, its services and the exporters with the shipped
rules; the hub's culler reads the GPUs' utilisation there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException
from kubernetes_asyncio.dynamic.exceptions import ResourceNotFoundError

from aiinfn_hub import k8s, labels

from . import demo_envs, devstorage, hubaccount, kueue_config, monitoring
from .demo_auth import DEMO_MODE_ENV
from .devcluster import versions
from .devcluster.cluster import DEFAULT_NAME, DEFAULT_PORT, DevCluster
from .devcluster.errors import DevClusterError
from .devcluster.processes import free_port, require_free

DEMO_NAMESPACE = "aiinfn-demo"
DEMO_USERS = {
    "alice": {"admin": True, "groups": ["cms-ml", "envs-admins"]},
    "bob": {"admin": False, "groups": ["lhcb-flashsim"]},
    "carol": {"admin": False, "groups": ["cms-ml", "lhcb-flashsim"]},
}
DEMO_DEFAULT_POLICY = {"accelerators": ["cpu"], "environments": "*"}
DEMO_GROUP_POLICIES = {
    "cms-ml": {
        "accelerators": "*",
        "environments": "*",
        "max_accelerators": 2,
        "custom_images": True,
    },
    "lhcb-flashsim": {
        "accelerators": ["cpu", "t4", "a100-mig-1g-10gb", "a100-mig-2g-20gb", "a100-mig-3g-40gb"],
        "environments": "*",
        "max_accelerators": 1,
    },
}
# A quota small enough to use up in a demo (docs/demo.md, "A quota used up"): bob's T4 hours,
# 6 minutes a day (docs/accounting.md, "Quotas").
DEMO_QUOTAS = {
    "bob-t4-daily": {
        "scope": "user",
        "subject": "bob",
        "model": "t4",
        "period": "day",
        "hours": 0.1,
    }
}
# Idle culling (docs/culling.md) with limits a demo user sees in a minute or two (docs/demo.md,
# "An idle GPU server culled"): a GPU at 0% for 60 s stops its server, warned 30 s before; every
# server is checked each 10 s. The demo's GPUs are busy unless made idle (monitoring.py).
DEMO_CULLING = {
    "enabled": True,
    "gpu_idle_time": 60,
    "warn_before": 30,
    "check_every": 10,
}
REPO_ROOT = Path(__file__).resolve().parents[2]


def hub_config(
    config_root: Path,
    state: Path,
    port: int,
    password: str,
    internal_ports: tuple[int, int, int, int, int],
    prometheus_url: str,
) -> str:
    """The demo's jupyterhub_config.py: the repository's files first, then the demo overrides.

    The hub's own port, the proxy's API port and the job, backup and usage services' ports are
    free ports picked for this run, so a demo never collides with another JupyterHub on the
    usual fixed ports. The public URL tells notebooks (and `aiinfn jobs` in their terminals)
    where the hub is. Culling is turned on last (culling_lines()).
    """
    hub_port, proxy_api_port, jobs_port, backup_port, usage_port = internal_ports
    service_urls = {
        "jobs": f"http://127.0.0.1:{jobs_port}",
        "backup": f"http://127.0.0.1:{backup_port}",
        "usage": f"http://127.0.0.1:{usage_port}",
    }
    lines = [
        f"load_subconfig({str(config_root / 'jupyterhub_config.py')!r})",
        f"c.JupyterHub.bind_url = 'http://127.0.0.1:{port}'",
        f"c.JupyterHub.public_url = 'http://127.0.0.1:{port}'",
        # jupyterhub_config.d appends the services, so here they are still a lazy list.
        f"_urls = {service_urls!r}",
        "c.JupyterHub.services = [dict(s, url=_urls[s['name']]) if s['name'] in _urls else s"
        " for s in c.JupyterHub.services.get_value([])]",
        f"c.JupyterHub.hub_bind_url = 'http://127.0.0.1:{hub_port}'",
        f"c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:{proxy_api_port}'",
        f"c.JupyterHub.db_url = {'sqlite:///' + str(state / 'jupyterhub.sqlite')!r}",
        f"c.JupyterHub.cookie_secret_file = {str(state / 'jupyterhub_cookie_secret')!r}",
        f"c.ConfigurableHTTPProxy.pid_file = {str(state / 'proxy.pid')!r}",
        "c.JupyterHub.authenticator_class = 'aiinfn-demo'",
        f"c.DemoAuthenticator.demo_users = {DEMO_USERS!r}",
        f"c.DemoAuthenticator.password = {password!r}",
        f"c.KubeSpawner.namespace = {DEMO_NAMESPACE!r}",
        f"c.AiInfnPlatform.default_policy = {DEMO_DEFAULT_POLICY!r}",
        f"c.AiInfnPlatform.group_policies = {DEMO_GROUP_POLICIES!r}",
        "c.AiInfnStorage.juicefs_claim = 'aiinfn-juicefs'",
        f"c.AiInfnAccounting.quotas = {DEMO_QUOTAS!r}",
        *culling_lines(config_root, prometheus_url),
    ]
    return "\n".join(lines) + "\n"


def culling_lines(config_root: Path, prometheus_url: str) -> list[str]:
    """DEMO_CULLING with the demo's Prometheus, then 60-culling.py run again in this file's
    namespace, as z2jh runs jupyterhub_config.d/ after hub.config: load_subconfig gave it a
    configuration of its own, without these settings (docs/culling.md, "How it runs")."""
    settings = {**DEMO_CULLING, "prometheus_url": prometheus_url}
    path = str(config_root / "jupyterhub_config.d" / "60-culling.py")
    return [
        *(f"c.AiInfnCulling.{key} = {value!r}" for key, value in settings.items()),
        f"exec(compile(open({path!r}).read(), {path!r}, 'exec'))",
    ]


async def prepare_cluster(
    kubeconfig: str, name: str, config_root: Path, state: Path
) -> tuple[Path, dict[str, Path]]:
    """Create the platform's cluster objects, the demo namespace (Pod Security "restricted"), its
    storage (helm-values/storage.yaml with every volume a folder under state/storage), its job
    queues (helm-values/kueue-queues.yaml with the LocalQueues in the demo namespace) and the
    hub's account, /envs for the curators with the example environment (demo_envs); returns the
    path of the hub's kubeconfig (in state) and the storage claims' folders."""
    api_client = await k8s.api_client(kubeconfig)
    async with api_client:
        await k8s.apply_objects(api_client, config_root / "helm-values" / "priority-classes.yaml")
        body = client.V1Namespace(
            metadata=client.V1ObjectMeta(
                name=name,
                labels={
                    labels.POD_SECURITY_ENFORCE: "restricted",
                    labels.POD_SECURITY_ENFORCE_VERSION: "latest",
                    labels.MANAGED_BY: labels.MANAGED_BY_VALUE,
                },
            )
        )
        try:
            await client.CoreV1Api(api_client).create_namespace(body)
        except ApiException as error:
            if error.status != 409:
                raise
        helm_values = config_root / "helm-values"
        storage = await devstorage.setup(
            api_client,
            name,
            state / "storage",
            helm_values / "storage.yaml",
            projects=helm_values / "projects.yaml",
        )
        await demo_envs.setup(api_client, name, devstorage.claim_folders(storage))
        queues = kueue_config.load(helm_values / "kueue-queues.yaml", helm_values / "projects.yaml")
        try:
            await kueue_config.apply(
                api_client,
                [*kueue_config.cluster_objects(queues), *kueue_config.local_queues(queues, name)],
            )
        except ResourceNotFoundError:
            raise DevClusterError(
                "Kueue is not installed in this cluster (no kueue.x-k8s.io/v1beta2 API): "
                "install it, or run the demo on the dev cluster"
            ) from None
        account = await hubaccount.hub_kubeconfig(
            api_client,
            name,
            Path(kubeconfig),
            state / "hub.kubeconfig",
            helm_values=config_root / "helm-values",
        )
        return account, devstorage.claim_folders(storage)


def _wait_healthy(url: str, hub: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if hub.poll() is not None:
            raise DevClusterError(
                f"JupyterHub exited during start-up (exit {hub.returncode}); see its output above"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    raise DevClusterError(f"JupyterHub did not answer at {url} within {timeout:.0f}s")


def _stop(hub: subprocess.Popen, proxy_pid_file: Path, proxy_api_port: int) -> None:
    """Stop the hub (it stops its proxy); if the hub died first, stop the proxy it left behind."""
    if hub.poll() is None:
        hub.send_signal(signal.SIGTERM)
        try:
            hub.wait(timeout=15)
        except subprocess.TimeoutExpired:
            hub.kill()
            hub.wait()
    try:
        pid = int(proxy_pid_file.read_text().strip())
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if (
        b"configurable-http-proxy" in command
        and f"--api-port\0{proxy_api_port}\0".encode() in command
    ):
        os.kill(pid, signal.SIGTERM)


def _banner(url: str, password: str, services: dict[str, str]) -> str:
    """What the demo prints once the hub answers: where, who, the password, the rest."""
    users = ", ".join(
        f"{name} ({'admin, ' if user['admin'] else ''}groups {' '.join(user['groups'])})"
        for name, user in DEMO_USERS.items()
    )
    lines = [f"aiinfn-dev demo is running at {url}", f"users: {users}", f"password: {password}"]
    lines += [f"{name}: {address}" for name, address in services.items()]
    lines.append("Ctrl-C stops everything this command started.")
    return "\n" + "".join(f"  {line}\n" for line in lines)


def run_demo(port: int, cluster_name: str, cluster_port: int, config_root: Path) -> int:
    if not (config_root / "jupyterhub_config.py").is_file():
        raise DevClusterError(
            f"no jupyterhub_config.py in {config_root}: "
            "run from the repository or pass --config-root"
        )
    require_free(port, "JupyterHub", "--port")
    log = lambda message: print(f"aiinfn-dev demo: {message}", file=sys.stderr, flush=True)  # noqa: E731
    cluster = DevCluster(name=cluster_name, port=cluster_port, log=log)
    external = os.environ.get("AIINFN_KUBECONFIG")
    started_cluster = False if external else cluster.up()
    hub = None
    beside = contextlib.ExitStack()  # PostgreSQL, the storage exporter, Prometheus
    try:
        kubeconfig = external or str(cluster.layout.admin_kubeconfig)
        state = versions.cache_dir() / f"demo-hub-{cluster_name}"
        state.mkdir(parents=True, exist_ok=True)
        hub_kubeconfig, folders = asyncio.run(
            prepare_cluster(kubeconfig, DEMO_NAMESPACE, config_root, state)
        )
        gpus = (str(hub_kubeconfig), DEMO_NAMESPACE)
        watching = monitoring.start(beside, state, folders, f"127.0.0.1:{port}", gpus)
        password = secrets.token_urlsafe(12)
        config_path = state / "jupyterhub_config.py"
        # hub, proxy API, the job, backup and usage services
        ports = (free_port(), free_port(), free_port(), free_port(), free_port())
        proxy_api_port = ports[1]
        config_path.write_text(
            hub_config(config_root, state, port, password, ports, watching.prometheus)
        )
        config_path.chmod(0o600)
        env = {
            **os.environ,
            **watching.environment,
            "KUBECONFIG": str(hub_kubeconfig),
            DEMO_MODE_ENV: "1",
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        }
        hub = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(config_path)], cwd=state, env=env
        )
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(f"{url}/hub/health", hub, timeout=60)
        print(_banner(url, password, watching.urls), flush=True)
        return hub.wait()
    except KeyboardInterrupt:
        log("stopping")
        return 0
    finally:
        if hub is not None:
            _stop(hub, state / "proxy.pid", proxy_api_port)
        beside.close()
        if started_cluster:
            cluster.down()
            log("dev cluster stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="aiinfn-dev", description="aiinfn-hub dev platform commands"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="run the platform locally on the dev cluster with demo users"
    )
    demo.add_argument(
        "--port", type=int, default=8000, help="JupyterHub port on 127.0.0.1 (default %(default)s)"
    )
    demo.add_argument(
        "--cluster-name",
        default=os.environ.get("AIINFN_DEVCLUSTER_NAME", DEFAULT_NAME),
        help="dev cluster to use or start (default %(default)s)",
    )
    demo.add_argument(
        "--cluster-port",
        type=int,
        default=int(os.environ.get("AIINFN_DEVCLUSTER_PORT", DEFAULT_PORT)),
        help="its kube-apiserver port on 127.0.0.1 (default %(default)s)",
    )
    demo.add_argument(
        "--config-root",
        type=Path,
        default=REPO_ROOT,
        help="folder with jupyterhub_config.py and jupyterhub_config.d/ (default: this checkout)",
    )
    args = parser.parse_args(argv)
    try:
        return run_demo(args.port, args.cluster_name, args.cluster_port, args.config_root)
    except DevClusterError as error:
        print(f"aiinfn-dev: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("aiinfn-dev: interrupted; everything started so far was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
