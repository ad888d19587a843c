"""The dev cluster: bring the control plane up, find it again, tear it down.

State lives in <cache>/clusters/<name>/ (certificates, etcd data, logs, cluster.json with the pids).
`up` while the cluster runs reuses it; a directory left by a run whose processes all died is
cleared and started afresh; a cluster with only some processes alive is an error naming the fix.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import shutil
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import build, components, kueue, pki, processes, topology, versions
from .errors import DevClusterError

if TYPE_CHECKING:
    from . import podrunner

DEFAULT_NAME = "aiinfn-dev"
DEFAULT_PORT = 16443
DEFAULT_TOPOLOGY = "ai-infn"
START_ORDER = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
ARGV_BUILDERS = {
    "etcd": components.etcd_argv,
    "kube-apiserver": components.apiserver_argv,
    "kube-controller-manager": components.controller_manager_argv,
    "kube-scheduler": components.scheduler_argv,
    "kwok": components.kwok_argv,
}


@dataclass(frozen=True)
class Status:
    """What `status` reports: state is running, stopped, stale or partial."""

    state: str
    name: str
    kubeconfig: Path | None = None
    server: str | None = None
    topology: str | None = None
    processes: tuple[processes.Running, ...] = ()

    def describe(self) -> str:
        if self.state == "running":
            pids = ", ".join(f"{p.name}={p.pid}" for p in self.processes)
            return (
                f"cluster {self.name!r} is running at {self.server} (topology {self.topology}); "
                f"KUBECONFIG={self.kubeconfig}; pids: {pids}"
            )
        return {
            "stopped": f"cluster {self.name!r} is not running",
            "stale": (
                f"cluster {self.name!r} is stopped (its directory is left from an unclean stop)"
            ),
            "partial": (
                f"cluster {self.name!r} is partly running: "
                f"run `aiinfn-devcluster down --name {self.name}`"
            ),
        }[self.state]


class DevCluster:
    """One named local cluster. Safe to use from several processes: up/down take a file lock."""

    def __init__(
        self,
        name: str = DEFAULT_NAME,
        port: int = DEFAULT_PORT,
        topology_name: str = DEFAULT_TOPOLOGY,
        cache: Path | None = None,
        log: Callable[[str], None] = print,
        pod_runner: bool = True,
    ) -> None:
        self.name = name
        self.port = port
        self.topology_name = topology_name
        self.cache = cache or versions.cache_dir()
        self.layout = components.Layout(self.cache / "clusters" / name)
        self.log = log
        # Run pods whose image is a catalog environment as local processes (podrunner.py).
        self.pod_runner = pod_runner

    # -- state ---------------------------------------------------------------------------------

    def _read_state(self) -> dict | None:
        try:
            return json.loads(self.layout.state.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def _write_state(self, state: dict) -> None:
        tmp = self.layout.state.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.layout.state)

    def status(self) -> Status:
        state = self._read_state()
        if state is None:
            return Status("stale" if self.layout.root.exists() else "stopped", self.name)
        procs = tuple(processes.Running(**p) for p in state.get("processes", []))
        alive = [p.alive() for p in procs]
        if procs and all(alive) and state.get("ready"):
            return Status(
                "running",
                self.name,
                self.layout.admin_kubeconfig,
                state["server"],
                state.get("topology"),
                procs,
            )
        return Status("partial" if any(alive) else "stale", self.name, processes=procs)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.layout.root.parent.mkdir(parents=True, exist_ok=True)
        with open(self.layout.root.parent / f".{self.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    # -- up / down -----------------------------------------------------------------------------

    def up(self, timeout: float = 120.0) -> bool:
        """Make sure the cluster runs; return True if this call started it, False if reused."""
        with self._locked():
            current = self.status()
            if current.state == "running":
                if current.topology != self.topology_name:
                    raise DevClusterError(
                        f"cluster {self.name!r} already runs topology {current.topology!r}: "
                        f"stop it with `aiinfn-devcluster down --name {self.name}` "
                        "or pick another --name"
                    )
                return False
            if current.state == "partial":
                raise DevClusterError(current.describe())
            if current.state == "stale":
                self.log(
                    f"clearing {self.layout.root}: left by a cluster that did not stop cleanly"
                )
                shutil.rmtree(self.layout.root)
            build.build(self.cache, log=self.log)
            try:
                self._start(timeout)
            except BaseException:
                self._stop_recorded()
                raise
            return True

    def down(self) -> bool:
        """Stop every recorded process by pid and remove the cluster directory; True if any ran."""
        with self._locked():
            was_running = self.status().state in ("running", "partial")
            self._stop_recorded()
            return was_running

    def _stop_recorded(self) -> None:
        state = self._read_state() or {}
        procs = [processes.Running(**p) for p in state.get("processes", [])]
        # Reverse start order: kwok and the controllers first, etcd last.
        processes.stop(list(reversed(procs)))
        shutil.rmtree(self.layout.root, ignore_errors=True)

    def _start(self, timeout: float) -> None:
        """Bring every process up in order, recording each pid before waiting on it, so that a
        failed start can always be stopped by `down`."""
        processes.require_free(self.port, "kube-apiserver", "--port (or AIINFN_DEVCLUSTER_PORT)")
        binaries = versions.binaries(self.cache)
        nodes = topology.node_manifests(self.topology_name)
        layout = self.layout
        layout.root.mkdir(parents=True)
        ports = self._allocate_ports()
        server = f"https://127.0.0.1:{ports.apiserver}"
        self._write_access(server)
        runner = self._pod_runner_settings()
        self._write_component_configs(runner)
        state = self._initial_state(server, ports)
        deadline = time.monotonic() + timeout
        probe = _Probe(layout, ports)
        self._start_control_plane(binaries, state, probe, deadline)
        self._wait("topology", None, deadline, lambda: probe.create_nodes(nodes))
        self._wait("nodes", None, deadline, lambda: probe.nodes_ready(len(nodes)))
        self._wait("service accounts", None, deadline, probe.default_service_account)
        self._start_kueue(state, probe, deadline)
        if runner:
            self._start_pod_runner(runner, state, deadline)
        state["ready"] = True
        self._write_state(state)
        self.log(
            f"cluster {self.name!r} up: {len(nodes)} nodes ({self.topology_name}); "
            f"KUBECONFIG={layout.admin_kubeconfig}"
        )

    def _allocate_ports(self) -> components.Ports:
        """The apiserver on the cluster's fixed port (clients find it there); the rest from the
        cluster's block of ports (processes.PortBlock), Kueue's later."""
        self._ports = processes.PortBlock(self.port)
        return components.Ports(
            apiserver=self.port,
            **{
                f: self._ports.take()
                for f in ("etcd_client", "etcd_peer", "controller_manager", "scheduler", "kwok")
            },
        )

    def _write_access(self, server: str) -> None:
        """The PKI and one kubeconfig per client identity, readable by the owner only."""
        layout = self.layout
        pki.create_pki(layout.pki)
        for identity in pki.CLIENT_IDENTITIES:
            path = (
                layout.admin_kubeconfig
                if identity.file_stem == "admin"
                else layout.kubeconfig(identity.file_stem)
            )
            components.write_yaml(
                path,
                components.kubeconfig(
                    server,
                    layout.pki / "ca.crt",
                    layout.pki / f"{identity.file_stem}.crt",
                    layout.pki / f"{identity.file_stem}.key",
                    identity.common_name,
                ),
            )
            path.chmod(0o600)

    def _write_component_configs(self, runner: podrunner.Settings | None) -> None:
        """Admission and kwok configuration; kwok leaves the pod runner's images to the runner."""
        layout = self.layout
        components.write_yaml(layout.config("admission.yaml"), components.pod_security_admission())
        components.write_yaml(
            layout.config("kwok.yaml"),
            components.kwok_config(
                versions.kwok_stages(self.cache), runner.images if runner else ()
            ),
        )

    def _initial_state(self, server: str, ports: components.Ports) -> dict:
        """cluster.json before any process starts: `status` and `down` read it from then on."""
        return {
            "name": self.name,
            "server": server,
            "ports": ports.as_dict(),
            "topology": self.topology_name,
            "versions": {
                "kubernetes": versions.KUBERNETES,
                "etcd": versions.ETCD,
                "kwok": versions.KWOK,
                "kueue": versions.KUEUE,
            },
            "processes": [],
            "ready": False,
        }

    def _start_control_plane(
        self, binaries: dict[str, Path], state: dict, probe: _Probe, deadline: float
    ) -> None:
        """etcd to kwok in START_ORDER, each ready before the next; kwok's Logs CRD as soon as the
        apiserver answers, since kwok watches it from its start."""
        layout = self.layout
        for name in START_ORDER:
            argv = ARGV_BUILDERS[name](binaries[name], layout, probe.ports)
            proc = processes.start(name, argv, layout.logs / f"{name}.log")
            state["processes"].append(proc.__dict__)
            self._write_state(state)
            self._wait(name, proc, deadline, lambda name=name: probe.ready(name))
            if name == "kube-apiserver":
                self.log(f"kube-apiserver ready at {state['server']}")
                self._wait("kwok Logs CRD", None, deadline, lambda: _logs_crd_established(probe))

    def _start_kueue(self, state: dict, probe: _Probe, deadline: float) -> None:
        """Kueue after the control plane: its CRDs first (its caches need them), its webhooks only
        once it answers, so no registration ever points at a server that is not up yet."""
        layout = self.layout
        manifests = versions.kueue_manifests(self.cache)
        ports = kueue.KueuePorts(
            **{f: self._ports.take() for f in ("webhook", "health", "metrics")}
        )
        state["ports"].update(ports.as_dict())
        kueue.ensure_metrics_certificate()
        cert_dir = layout.root / "kueue-certs"
        cert_dir.mkdir()
        shutil.copy(layout.pki / "serving.crt", cert_dir / "tls.crt")
        shutil.copy(layout.pki / "serving.key", cert_dir / "tls.key")
        components.write_yaml(layout.config("kueue.yaml"), kueue.configuration(ports, cert_dir))
        crds = kueue.crds(manifests / "crd")
        self._wait(
            "Kueue CRDs", None, deadline, lambda: probe.create_all([kueue.namespace(), *crds])
        )
        self._wait("Kueue CRDs", None, deadline, lambda: probe.crds_established(crds))
        argv = kueue.argv(
            versions.binaries(self.cache)["kueue"],
            layout.config("kueue.yaml"),
            layout.kubeconfig("kueue"),
        )
        proc = processes.start("kueue", argv, layout.logs / "kueue.log")
        state["processes"].append(proc.__dict__)
        self._write_state(state)
        self._wait("kueue", proc, deadline, lambda: probe.healthy(ports.health, "/readyz"))
        webhooks = kueue.webhook_configurations(
            kueue.load_documents(manifests / "webhook.yaml"),
            ports.webhook,
            (layout.pki / "ca.crt").read_bytes(),
        )
        self._wait("Kueue webhooks", None, deadline, lambda: probe.create_all(webhooks))
        self.log(f"Kueue {versions.KUEUE} ready (webhooks on 127.0.0.1:{ports.webhook})")

    # -- pod runner ----------------------------------------------------------------------------

    def _pod_runner_settings(self) -> podrunner.Settings | None:
        """The pod runner's settings, or None (saying why) when every pod stays simulated."""
        if not self.pod_runner:
            return None
        from . import podrunner  # only clusters that run it import the asyncio client

        settings, problem = podrunner.for_cluster(
            self.layout.root, self.layout.kubeconfig("kwok"), self.log
        )
        if problem:
            self.log(f"pod runner off, kwok simulates every pod: {problem}")
        return settings

    def _start_pod_runner(self, settings: podrunner.Settings, state: dict, deadline: float) -> None:
        """The runner plays the kubelet for its pods, with kwok's identity; ready once it listed."""
        path = self.layout.config("pod-runner.json")
        path.write_text(settings.to_json())
        argv = [sys.executable, "-m", "aiinfn_dev.devcluster.podrunner", "--config", str(path)]
        proc = processes.start("pod-runner", argv, self.layout.logs / "pod-runner.log")
        state["processes"].append(proc.__dict__)
        self._write_state(state)
        marker = Path(settings.state) / "ready"
        self._wait("pod-runner", proc, deadline, marker.exists)
        self.log(
            f"pod runner ready: {len(settings.images)} environment images run as local processes"
        )

    def _wait(
        self, what: str, proc: processes.Running | None, deadline: float, check: Callable[[], bool]
    ) -> None:
        while time.monotonic() < deadline:
            if proc is not None and not proc.alive():
                log = self.layout.logs / f"{what}.log"
                raise DevClusterError(
                    f"{what} exited during start-up: {processes.log_tail(log)} (full log: {log})"
                )
            try:
                if check():
                    return
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.2)
        log_hint = f" (log: {self.layout.logs / f'{what}.log'})" if proc else ""
        raise DevClusterError(
            f"{what} was not ready in time{log_hint}; `aiinfn-devcluster down` cleans up"
        )


_AGGREGATED_DISCOVERY = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"

# Collection names of the kinds the harness creates itself (no discovery at start).
_COLLECTIONS = {
    "Namespace": "namespaces",
    "CustomResourceDefinition": "customresourcedefinitions",
    "MutatingWebhookConfiguration": "mutatingwebhookconfigurations",
    "ValidatingWebhookConfiguration": "validatingwebhookconfigurations",
}


def _logs_crd_established(probe: _Probe) -> bool:
    """Create kwok's Logs CRD (kwok watches it from start) and tell whether it is served."""
    crd = components.kwok_logs_crd()
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    code, body = probe.api("POST", path, crd)
    if code not in (201, 409):
        raise DevClusterError(f"creating the kwok Logs CRD failed ({code}): {body[:200]!r}")
    code, body = probe.api("GET", f"{path}/{crd['metadata']['name']}")
    if code != 200:
        return False
    conditions = json.loads(body).get("status", {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


class _Probe:
    """Readiness checks over plain HTTPS with the admin certificate; no client library needed at
    start."""

    def __init__(self, layout: components.Layout, ports: components.Ports) -> None:
        self.ports = ports
        self.ctx = ssl.create_default_context(cafile=str(layout.pki / "ca.crt"))
        self.ctx.load_cert_chain(str(layout.pki / "admin.crt"), str(layout.pki / "admin.key"))
        self.insecure = ssl.create_default_context()
        self.insecure.check_hostname = False
        self.insecure.verify_mode = ssl.CERT_NONE

    def _request(
        self,
        port: int,
        method: str,
        path: str,
        body: dict | None = None,
        tls: ssl.SSLContext | None = None,
        https: bool = True,
        accept: str | None = None,
    ) -> tuple[int, bytes]:
        conn = (
            http.client.HTTPSConnection("127.0.0.1", port, context=tls or self.ctx, timeout=5)
            if https
            else http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        )
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            if accept:
                headers["Accept"] = accept
            conn.request(
                method, path, body=json.dumps(body) if body is not None else None, headers=headers
            )
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def api(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        return self._request(self.ports.apiserver, method, path, body)

    def ready(self, name: str) -> bool:
        ports = self.ports
        if name == "etcd":
            return self._request(ports.etcd_client, "GET", "/health", https=False)[0] == 200
        if name == "kube-apiserver":
            return self.api("GET", "/readyz")[0] == 200
        if name == "kube-controller-manager":
            return (
                self._request(ports.controller_manager, "GET", "/healthz", tls=self.insecure)[0]
                == 200
            )
        if name == "kube-scheduler":
            return self._request(ports.scheduler, "GET", "/healthz", tls=self.insecure)[0] == 200
        if name == "kwok":
            try:
                return self._request(ports.kwok, "GET", "/healthz", tls=self.insecure)[0] == 200
            except ssl.SSLError:
                return self._request(ports.kwok, "GET", "/healthz", https=False)[0] == 200
        raise ValueError(name)

    def healthy(self, port: int, path: str) -> bool:
        return self._request(port, "GET", path, https=False)[0] == 200

    def create_all(self, objects: list[dict]) -> bool:
        """Create cluster-scoped objects; one that already exists is left as it is."""
        for obj in objects:
            group, _, version = obj["apiVersion"].rpartition("/")
            prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
            code, body = self.api("POST", f"{prefix}/{_COLLECTIONS[obj['kind']]}", obj)
            if code not in (201, 409):
                name = obj["metadata"]["name"]
                raise DevClusterError(
                    f"creating {obj['kind']} {name} failed ({code}): {body[:200]!r}"
                )
        return True

    def crds_established(self, crds: list[dict]) -> bool:
        """Established and in aggregated discovery: controllers map kinds through discovery, which
        the API server updates a moment after the Established condition (Kueue exited on that gap
        once, with "no matches for kind Workload")."""
        return self._crd_conditions_established(crds) and self._crds_discoverable(crds)

    def _crds_discoverable(self, crds: list[dict]) -> bool:
        code, body = self._request(
            self.ports.apiserver, "GET", "/apis", accept=_AGGREGATED_DISCOVERY
        )
        if code != 200:
            return False
        served = {
            (group["metadata"]["name"], version["version"], resource["resource"])
            for group in json.loads(body).get("items") or []
            for version in group.get("versions") or []
            for resource in version.get("resources") or []
        }
        return all(
            (crd["spec"]["group"], version["name"], crd["spec"]["names"]["plural"]) in served
            for crd in crds
            for version in crd["spec"]["versions"]
            if version.get("served", True)
        )

    def _crd_conditions_established(self, crds: list[dict]) -> bool:
        for crd in crds:
            code, body = self.api(
                "GET",
                f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}",
            )
            if code != 200:
                return False
            conditions = json.loads(body).get("status", {}).get("conditions") or []
            if not any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                return False
        return True

    def create_nodes(self, nodes: list[dict]) -> bool:
        """Create the topology's nodes with their status (settable only on create)."""
        for node in nodes:
            code, body = self.api("POST", "/api/v1/nodes", node)
            if code not in (201, 409):
                raise DevClusterError(
                    f"creating node {node['metadata']['name']} failed ({code}): {body[:200]!r}"
                )
        return True

    def nodes_ready(self, expected: int) -> bool:
        code, body = self.api("GET", "/api/v1/nodes?labelSelector=" + topology.TOPOLOGY_LABEL)
        ready = 0
        for item in json.loads(body)["items"]:
            conditions = item.get("status", {}).get("conditions") or []
            ready += any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
        return ready >= expected

    def default_service_account(self) -> bool:
        return self.api("GET", "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200
