"""Command lines and configuration files of the control-plane components (pure builders).

Every component binds 127.0.0.1, talks TLS with client certificates, and runs with RBAC and the
PodSecurity admission plugin like a production cluster. The flags are the upstream ones; the
choices that differ from a kubeadm cluster are commented where they are made.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
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
# A pod with this annotation "kwok" is kwok's to play even when the pod runner knows its image:
# for tests whose hub never talks to the server (a stand-in answers), a real one is only cost.
PLAYED_BY_ANNOTATION = "devcluster.aiinfn.infn.it/played-by"
_PLAYED_BY_KEY = f'.metadata.annotations["{PLAYED_BY_ANNOTATION}"]'


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
# Pods start at once unless this annotation gives a delay (a Go duration such as "10s"): how a
# benchmark plays servers whose images take a while to pull and start.
POD_READY_DELAY_ANNOTATION = "pod-ready.stage.kwok.x-k8s.io/delay"
# Job pods finish this long after they run unless `pod-complete.stage.kwok.x-k8s.io/delay` says
# otherwise (a Go duration such as "30s"); no random jitter, so tests are repeatable.
JOB_POD_DEFAULT_RUNTIME_MS = 1000
# A job container with this variable set to "fail" fails at whichever remote site runs it, and
# one with "succeed" never fails there (the tests' way to decide; the sites' own failure rates
# are random).
SITE_OUTCOME_ENV = "DEVCLUSTER_SITE_OUTCOME"
# A job container with this variable set to a Go duration (such as "40s") runs that long, plus
# the site's jitter, at whichever remote site runs it (a pod's delay annotation still wins).
SITE_RUNTIME_ENV = "DEVCLUSTER_SITE_RUNTIME"
_NODE_NAME_KEY = ".spec.nodeName"
_RUNTIME = (
    f'first(.spec.containers[].env[]? | select(.name == "{SITE_RUNTIME_ENV}") | .value | strings)'
)


def _forced(outcome: str) -> str:
    """jq: some container's env sets SITE_OUTCOME_ENV to `outcome`."""
    return (
        f'[.spec.containers[].env[]? | select(.name == "{SITE_OUTCOME_ENV}" and '
        f'.value == "{outcome}")] | length > 0'
    )


_FORCED_FAILURE = _forced("fail")
_FORCED_SUCCESS = _forced("succeed")


@dataclass(frozen=True)
class SiteBehaviour:
    """How the dev cluster plays one remote site's virtual node (the paper's Figure 2, its hours
    compressed into seconds): pods start after `start_ms` plus up to `start_jitter_ms`, run
    `run_ms` plus up to `run_jitter_ms` (a pod's delay annotation, if set, wins), and fail in
    `failure_permille` of a thousand runs."""

    node: str
    start_ms: int
    start_jitter_ms: int
    run_ms: int
    run_jitter_ms: int
    failure_permille: int


# The ai-infn topology's virtual nodes: INFN-Tier1 and the Podman VM stable, Leonardo slow and
# variable to start, the HPC-Bubble sustained.
SITES = (
    SiteBehaviour("interlink-infn-t1", 200, 500, JOB_POD_DEFAULT_RUNTIME_MS, 1000, 0),
    SiteBehaviour("vk-podman-vm", 100, 200, JOB_POD_DEFAULT_RUNTIME_MS, 500, 0),
    SiteBehaviour("vk-leonardo-slurm", 1000, 6000, JOB_POD_DEFAULT_RUNTIME_MS, 4000, 20),
    SiteBehaviour("vk-hpc-bubble-slurm", 500, 1500, JOB_POD_DEFAULT_RUNTIME_MS, 1500, 5),
)


def kwok_config(
    stage_library: Path,
    runner_images: Iterable[str] = (),
    sites: Sequence[SiteBehaviour] = SITES,
) -> list[dict[str, Any]]:
    """kwok's configuration documents: pod IPs on loopback plus the lifecycle stages. Pods the
    pod runner plays (first container's image in runner_images, on a local node) are left out of
    every local pod stage; pods on a site's virtual node, whatever their image, get that site's
    own start, completion and failure stages and are stopped and deleted by kwok."""
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
    stages = _library_stages(stage_library)
    by_name = {s["metadata"]["name"]: s for s in stages}
    _stop_before_delete(stages, by_name)
    site_stages = [
        stage
        for site in sites
        for stage in _site_stages(site, by_name["pod-ready"], by_name["pod-complete"])
    ]
    if sites:
        nodes = sorted(s.node for s in sites)
        site_stages += _remote_end_stages(by_name["pod-delete"], by_name["pod-stop"], nodes)
        for name in ("pod-ready", "pod-complete", "pod-delete", "pod-stop"):
            _select(by_name[name], _NODE_NAME_KEY, "NotIn", nodes)
    # The pod runner plays only pods on local nodes: a site "runs" every pod bound to it.
    if runner_images:
        stages = _leave_to_runner(stages, sorted(runner_images))
    documents.extend([*stages, *site_stages])
    return documents


def _leave_to_runner(stages: list[dict[str, Any]], images: list[str]) -> list[dict[str, Any]]:
    """The pod stages for pods whose image the runner does not play, and a copy of each for
    pods it would play but whose PLAYED_BY_ANNOTATION gives them to kwok (selectors only AND)."""
    played = []
    for stage in stages:
        if stage["spec"]["resourceRef"]["kind"] != "Pod":
            continue
        given = copy.deepcopy(stage)
        given["metadata"] = {"name": f"{stage['metadata']['name']}-given-to-kwok"}
        _select(given, RUNNER_IMAGE_KEY, "In", images)
        _select(given, _PLAYED_BY_KEY, "In", ["kwok"])
        played.append(given)
        _select(stage, RUNNER_IMAGE_KEY, "NotIn", images)
    return [*stages, *played]


def _library_stages(stage_library: Path) -> list[dict[str, Any]]:
    """KWOK_STAGE_FILES' stages with the dev cluster's delays: pods ready at once unless their
    annotation says otherwise, job pods complete after JOB_POD_DEFAULT_RUNTIME_MS, no jitter."""
    stages = []
    for relative in KWOK_STAGE_FILES:
        for stage in yaml.safe_load_all((stage_library / relative).read_text()):
            if stage["metadata"]["name"] == "pod-ready":
                stage["spec"]["delay"] = {
                    "durationMilliseconds": 0,
                    "durationFrom": {
                        "expressionFrom": f'.metadata.annotations["{POD_READY_DELAY_ANNOTATION}"]'
                    },
                }
            if stage["metadata"]["name"] == "pod-complete":
                delay = stage["spec"]["delay"]
                delay["durationMilliseconds"] = JOB_POD_DEFAULT_RUNTIME_MS
                delay.pop("jitterDurationMilliseconds", None)
            stages.append(stage)
    return stages


def _remote_end_stages(
    delete: Mapping[str, Any], stop: Mapping[str, Any], nodes: list[str]
) -> list[dict[str, Any]]:
    """pod-delete and pod-stop for pods on the sites' nodes, whatever their image."""
    copies = []
    for stage in (delete, stop):
        remote = copy.deepcopy(dict(stage))
        remote["metadata"] = {"name": f"{stage['metadata']['name']}-remote"}
        _select(remote, _NODE_NAME_KEY, "In", nodes)
        copies.append(remote)
    return copies


def _select(stage: dict[str, Any], key: str, operator: str, values: list[str]) -> None:
    stage["spec"].setdefault("selector", {}).setdefault("matchExpressions", []).append(
        {"key": key, "operator": operator, "values": values}
    )


def _site_stages(
    site: SiteBehaviour, ready: Mapping[str, Any], complete: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The library's pod-ready and pod-complete stages for one site's node, with its delays,
    and a pod-fail stage that kwok picks instead of pod-complete by weight. Weights are jq
    strings: kwok reads a weightFrom result only as a string or a float, and gojq's integers
    are neither, so kwok took the stage's static weight (0 for both: a coin toss)."""
    start = copy.deepcopy(dict(ready))
    start["metadata"] = {"name": f"pod-ready-{site.node}"}
    start["spec"]["delay"] = {
        "durationMilliseconds": site.start_ms,
        "jitterDurationMilliseconds": site.start_ms + site.start_jitter_ms,
    }
    finish = copy.deepcopy(dict(complete))
    finish["metadata"] = {"name": f"pod-complete-{site.node}"}
    annotation = '.metadata.annotations["pod-complete.stage.kwok.x-k8s.io/{}"]'
    delay, jitter = annotation.format("delay"), annotation.format("jitter-delay")
    finish["spec"]["delay"] = {
        "durationMilliseconds": site.run_ms,
        "durationFrom": {"expressionFrom": f"{delay} // {_RUNTIME}"},
        "jitterDurationMilliseconds": site.run_ms + site.run_jitter_ms,
        # A pod given a delay but no jitter runs exactly that long; one given a run time by its
        # env gets the site's jitter on top (Go durations concatenate: "40s" + "500ms").
        "jitterDurationFrom": {
            "expressionFrom": f'{jitter} // {delay} // ({_RUNTIME} + "{site.run_jitter_ms}ms")'
        },
    }
    finish["spec"].pop("weight", None)
    finish["spec"]["weightFrom"] = {
        "expressionFrom": f'if {_FORCED_FAILURE} then "0" elif {_FORCED_SUCCESS} then "1000" '
        f'else "{1000 - site.failure_permille}" end'
    }
    fail = copy.deepcopy(finish)
    fail["metadata"] = {"name": f"pod-fail-{site.node}"}
    fail["spec"]["weightFrom"] = {
        "expressionFrom": f'if {_FORCED_FAILURE} then "1000" elif {_FORCED_SUCCESS} then "0" '
        f'else "{site.failure_permille}" end'
    }
    failure = _failed_status(1, f"the remote site ({site.node}) failed the job")
    fail["spec"]["next"] = {"delete": False, "statusTemplate": failure}
    for stage in (start, finish, fail):
        _select(stage, _NODE_NAME_KEY, "In", [site.node])
    return [start, finish, fail]


def _stop_before_delete(stages: list[dict[str, Any]], by_name: dict[str, dict[str, Any]]) -> None:
    """A deleted pod that still has finalizers (a Job's pod tracking) is first stopped, as a
    kubelet does (pod-stop); pod-delete removes it once the finalizers are gone."""
    delete = by_name["pod-delete"]["spec"].setdefault("selector", {})
    delete.setdefault("matchExpressions", []).append(
        {"key": ".metadata.finalizers", "operator": "DoesNotExist"}
    )
    stages.append(_stop_stage())
    by_name["pod-stop"] = stages[-1]


def _stop_stage() -> dict[str, Any]:
    """A kubelet's end of a pod deleted while it runs: its containers are stopped (SIGTERM, exit
    143) and the pod fails. The Job controller counts a pod only once it is terminal (with a pod
    failure policy) and keeps its tracking finalizer until then; without this stage such a pod
    stayed Terminating for ever."""
    return {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Stage",
        "metadata": {"name": "pod-stop"},
        "spec": {
            "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
            "selector": {
                "matchExpressions": [
                    {"key": ".metadata.deletionTimestamp", "operator": "Exists"},
                    {"key": ".metadata.finalizers", "operator": "Exists"},
                    {"key": ".status.phase", "operator": "In", "values": ["Pending", "Running"]},
                ]
            },
            "next": {"delete": False, "statusTemplate": _failed_status(143)},
        },
    }


def _failed_status(exit_code: int, message: str | None = None) -> str:
    """A failed pod's status: every container terminated with `exit_code` (and `message`)."""
    message_line = f"      message: {message}\n" if message else ""
    return (
        "{{ $now := Now }}\n"
        "containerStatuses:\n"
        "{{ range .spec.containers }}\n"
        "- image: {{ .image | Quote }}\n"
        "  name: {{ .name | Quote }}\n"
        "  ready: false\n"
        "  restartCount: 0\n"
        "  started: false\n"
        "  state:\n"
        "    terminated:\n"
        f"      exitCode: {exit_code}\n"
        "      finishedAt: {{ $now | Quote }}\n"
        "      reason: Error\n"
        f"{message_line}"
        "      startedAt: {{ $now | Quote }}\n"
        "{{ end }}\n"
        "phase: Failed\n"
    )


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
