"""Command lines and configuration files of the control-plane components (pure builders).

Every component binds 127.0.0.1, talks TLS with client certificates, and runs with RBAC and the
PodSecurity admission plugin like a production cluster. The flags are the upstream ones; the
choices that differ from a kubeadm cluster are commented where they are made.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# Virtual service range for ClusterIPs: allocated by the API server, never dialled by anything here.
SERVICE_CIDR = "10.96.0.0/16"
# kwok's fallback pod range; nodes carry their own /24 inside it (topology.POD_NETWORK).
POD_CIDR = "127.64.0.0/14"
KWOK_NODE_SELECTOR = "kwok.x-k8s.io/node=fake"
NODE_LEASE_SECONDS = 40
# The field kwok's pod stages test (jq syntax) to leave the pod runner's pods alone;
# podplan.runner_image reads the same one.
RUNNER_IMAGE_KEY = ".spec.containers.[0].image"


@dataclass(frozen=True)
class Ports:
    """Ports on 127.0.0.1; the API server's is fixed by the user, the others are picked free."""

    apiserver: int
    etcd_client: int
    etcd_peer: int
    controller_manager: int
    scheduler: int
    kwok: int

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Layout:
    """Where one cluster keeps its files."""

    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def state(self) -> Path:
        return self.root / "cluster.json"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    def kubeconfig(self, identity: str) -> Path:
        return self.root / f"{identity}.kubeconfig"

    def config(self, name: str) -> Path:
        return self.root / name


def kubeconfig(server: str, ca: Path, cert: Path, key: Path, user: str) -> dict[str, Any]:
    """A kubeconfig with one cluster, one client-certificate user and one context."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "aiinfn-dev", "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [
            {"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}
        ],
        "contexts": [{"name": "aiinfn-dev", "context": {"cluster": "aiinfn-dev", "user": user}}],
        "current-context": "aiinfn-dev",
    }


def pod_security_admission() -> dict[str, Any]:
    """AdmissionConfiguration: "restricted" is the cluster default, so every namespace that does not
    say otherwise enforces it; namespaces may still carry explicit labels."""
    return {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "AdmissionConfiguration",
        "plugins": [
            {
                "name": "PodSecurity",
                "configuration": {
                    "apiVersion": "pod-security.admission.config.k8s.io/v1",
                    "kind": "PodSecurityConfiguration",
                    "defaults": {
                        "enforce": "restricted",
                        "enforce-version": "latest",
                        "audit": "restricted",
                        "audit-version": "latest",
                        "warn": "restricted",
                        "warn-version": "latest",
                    },
                    "exemptions": {
                        "usernames": [],
                        "runtimeClasses": [],
                        "namespaces": ["kube-system"],
                    },
                },
            }
        ],
    }


def etcd_argv(binary: Path, layout: Layout, ports: Ports) -> list[str]:
    peer = f"http://127.0.0.1:{ports.etcd_peer}"
    client = f"http://127.0.0.1:{ports.etcd_client}"
    return [
        str(binary),
        "--name=aiinfn-dev",
        f"--data-dir={layout.etcd_data}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=aiinfn-dev={peer}",
        "--initial-cluster-state=new",
        # A throwaway test store: durability buys nothing and fsync dominates on small disks.
        "--unsafe-no-fsync=true",
        "--quota-backend-bytes=4294967296",
        "--log-level=warn",
    ]


def apiserver_argv(binary: Path, layout: Layout, ports: Ports) -> list[str]:
    pki = layout.pki
    return [
        str(binary),
        f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={ports.apiserver}",
        f"--tls-cert-file={pki / 'serving.crt'}",
        f"--tls-private-key-file={pki / 'serving.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        f"--admission-control-config-file={layout.config('admission.yaml')}",
        "--allow-privileged=true",
        # The apiserver's own address is loopback, which Endpoints may not hold: publish none.
        "--endpoint-reconciler-type=none",
        "--profiling=false",
        "--v=1",
    ]


def _control_loop_flags(kubeconfig_path: Path, port: int) -> list[str]:
    """What the controller-manager and the scheduler share: their own identity for the API, a
    loopback secure port whose health paths need no login, and no leader election."""
    return [
        f"--kubeconfig={kubeconfig_path}",
        f"--authentication-kubeconfig={kubeconfig_path}",
        f"--authorization-kubeconfig={kubeconfig_path}",
        "--authorization-always-allow-paths=/healthz,/readyz,/livez",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        "--leader-elect=false",
    ]


def controller_manager_argv(binary: Path, layout: Layout, ports: Ports) -> list[str]:
    return [
        str(binary),
        *_control_loop_flags(
            layout.kubeconfig("kube-controller-manager"), ports.controller_manager
        ),
        f"--root-ca-file={layout.pki / 'ca.crt'}",
        f"--service-account-private-key-file={layout.pki / 'sa.key'}",
        f"--cluster-signing-cert-file={layout.pki / 'ca.crt'}",
        f"--cluster-signing-key-file={layout.pki / 'ca.key'}",
        "--use-service-account-credentials=true",
        # Node CIDRs come from the topology; there is no cloud and no kube-proxy.
        "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller",
        "--kube-api-qps=200",
        "--kube-api-burst=400",
        "--v=1",
    ]


def scheduler_argv(binary: Path, layout: Layout, ports: Ports) -> list[str]:
    return [
        str(binary),
        *_control_loop_flags(layout.kubeconfig("kube-scheduler"), ports.scheduler),
        "--v=1",
    ]


def kwok_argv(binary: Path, layout: Layout, ports: Ports) -> list[str]:
    return [
        str(binary),
        f"--kubeconfig={layout.kubeconfig('kwok')}",
        f"--config={layout.config('kwok.yaml')}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={KWOK_NODE_SELECTOR}",
        "--node-ip=127.0.0.1",
        "--node-name=localhost",
        f"--node-port={ports.kwok}",
        f"--server-address=127.0.0.1:{ports.kwok}",
        f"--tls-cert-file={layout.pki / 'serving.crt'}",
        f"--tls-private-key-file={layout.pki / 'serving.key'}",
        f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
        f"--cidr={POD_CIDR}",
        # Container logs come from kwok Logs objects, which the pod runner writes for its pods.
        "--enable-crds=Logs",
    ]


# The stages taken from kwok's own library (relative to its kustomize/stage folder).
KWOK_STAGE_FILES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/general/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
)
# Job pods finish this long after they run unless `pod-complete.stage.kwok.x-k8s.io/delay` says
# otherwise (a Go duration such as "30s"); no random jitter, so tests are repeatable.
JOB_POD_DEFAULT_RUNTIME_MS = 1000


def kwok_config(stage_library: Path, runner_images: Iterable[str] = ()) -> list[dict[str, Any]]:
    """kwok's configuration documents: pod IPs on loopback plus the lifecycle stages. Pods the
    pod runner plays (first container's image in runner_images) are left out of every pod stage."""
    documents: list[dict[str, Any]] = [
        {
            "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
            "kind": "KwokConfiguration",
            # kwok applies no defaults to a configuration file it is given: spell them out.
            "options": {
                "cidr": POD_CIDR,
                "nodeIP": "127.0.0.1",
                "nodeLeaseDurationSeconds": NODE_LEASE_SECONDS,
                "nodeLeaseParallelism": 4,
                "podPlayStageParallelism": 4,
                "nodePlayStageParallelism": 4,
                "podsOnNodeSyncParallelism": 1,
                "enablePodsOnNodeSyncListPager": True,
                # The kubelet endpoints (container logs among them) for `kubectl logs`.
                "enableDebuggingHandlers": True,
            },
        }
    ]
    for relative in KWOK_STAGE_FILES:
        for stage in yaml.safe_load_all((stage_library / relative).read_text()):
            if stage["metadata"]["name"] == "pod-complete":
                delay = stage["spec"]["delay"]
                delay["durationMilliseconds"] = JOB_POD_DEFAULT_RUNTIME_MS
                delay.pop("jitterDurationMilliseconds", None)
            if runner_images and stage["spec"]["resourceRef"]["kind"] == "Pod":
                stage["spec"]["selector"].setdefault("matchExpressions", []).append(
                    {"key": RUNNER_IMAGE_KEY, "operator": "NotIn", "values": sorted(runner_images)}
                )
            documents.append(stage)
    return documents


def kwok_logs_crd() -> dict[str, Any]:
    """kwok's Logs resource (per-pod log files for its kubelet endpoint), with an open schema:
    only kwok and the pod runner read and write it."""
    open_object = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "logs.kwok.x-k8s.io"},
        "spec": {
            "group": "kwok.x-k8s.io",
            "names": {"kind": "Logs", "listKind": "LogsList", "plural": "logs", "singular": "logs"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1alpha1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"spec": open_object, "status": open_object},
                        }
                    },
                    "subresources": {"status": {}},
                }
            ],
        },
    }


def write_yaml(path: Path, documents: list[dict[str, Any]] | dict[str, Any]) -> None:
    docs = documents if isinstance(documents, list) else [documents]
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
