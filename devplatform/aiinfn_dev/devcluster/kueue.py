"""Kueue in the dev cluster: configuration, command line and webhook registrations (pure
builders), and the manifests and certificate it needs at start.

Kueue runs as one more local process, like the control plane: its own CRDs (from the module it
was built from, served as `kueue.x-k8s.io/v1beta2` without conversion), certificates from the
cluster CA, every port on 127.0.0.1. Its webhooks are registered by URL, and only those for
Kueue's own objects and for Jobs that carry a queue label: a Kueue that is not answering can then
never block a notebook pod or a plain Job. The cluster's etcd goes with `down`, so no
registration outlives the cluster.
"""

from __future__ import annotations

import base64
import copy
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from aiinfn_hub.labels import KUEUE_QUEUE

from . import pki
from .errors import DevClusterError

NAMESPACE = "kueue-system"
# Namespaces whose Jobs Kueue never manages (upstream's default) and whose objects no webhook sees.
UNMANAGED_NAMESPACES = (NAMESPACE, "kube-system")
# The batch/v1 Job integration is the only one enabled: the platform's jobs are Jobs, and
# notebooks (plain pods of KubeSpawner) stay outside Kueue.
FRAMEWORKS = ("batch/job",)
# Webhooks kept from upstream's list: Kueue's own objects, and Jobs.
WEBHOOK_API_GROUPS = frozenset({"kueue.x-k8s.io", "batch"})
WEBHOOK_CONFIGURATION_NAMES = {
    "MutatingWebhookConfiguration": "kueue-mutating-webhook-configuration",
    "ValidatingWebhookConfiguration": "kueue-validating-webhook-configuration",
}
# Kueue reads its metrics certificate from this fixed path whenever it does not manage its own
# certificates (cmd/kueue/main.go); nothing else can be configured there.
METRICS_CERT_DIR = Path("/etc/kueue/metrics/certs")


@dataclass(frozen=True)
class KueuePorts:
    """Kueue's listeners on 127.0.0.1, picked free at start (its defaults 8081 and 8443 would
    collide with JupyterHub's hub port and with each other cluster's Kueue)."""

    webhook: int
    health: int
    metrics: int

    def as_dict(self) -> dict[str, int]:
        return {f"kueue_{name}": port for name, port in self.__dict__.items()}


# helm-values/kueue-values.yaml's, sooner: a job whose running pod the scheduler stopped for a
# notebook is requeued once the replacement pod has waited `recoveryTimeout`, and tried again
# after the backoff (the tests' job pods stop within seconds, so they need not wait minutes).
WAIT_FOR_PODS_READY = {
    "timeout": "30m",
    "recoveryTimeout": "30s",
    "requeuingStrategy": {
        "timestamp": "Eviction",
        "backoffBaseSeconds": 10,
        "backoffMaxSeconds": 300,
    },
}


def configuration(ports: KueuePorts, cert_dir: Path) -> dict[str, Any]:
    """Kueue's Configuration file (config.kueue.x-k8s.io/v1beta2, decoded strictly by Kueue)."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{ports.health}"},
        "metrics": {"bindAddress": f"127.0.0.1:{ports.metrics}"},
        "webhook": {"host": "127.0.0.1", "port": ports.webhook, "certDir": str(cert_dir)},
        # One replica, no election; certificates come from the cluster CA, not from a Secret
        # and a Service the API server could not reach from loopback.
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "manageJobsWithoutQueueName": False,
        "managedJobsNamespaceSelector": {
            "matchExpressions": [
                {
                    "key": "kubernetes.io/metadata.name",
                    "operator": "NotIn",
                    "values": list(UNMANAGED_NAMESPACES),
                },
            ]
        },
        "integrations": {"frameworks": list(FRAMEWORKS)},
        "waitForPodsReady": WAIT_FOR_PODS_READY,
        # The on-demand visibility API server reads its certificate from /visibility and would
        # need an APIService; nothing here uses it.
        "featureGates": {"VisibilityOnDemand": False},
    }


def argv(binary: Path, config_path: Path, kubeconfig: Path) -> list[str]:
    return [
        str(binary),
        f"--config={config_path}",
        f"--kubeconfig={kubeconfig}",
        "--zap-log-level=info",
    ]


def _keep(webhook: dict[str, Any]) -> bool:
    return all(set(rule["apiGroups"]) <= WEBHOOK_API_GROUPS for rule in webhook["rules"])


def webhook_configurations(
    upstream: list[dict[str, Any]], port: int, ca_pem: bytes
) -> list[dict[str, Any]]:
    """Upstream's webhook configurations, registered by URL on 127.0.0.1 with the cluster CA.

    Kept: Kueue's own APIs and batch/v1 Job (pods, Deployments and the other integrations are
    not enabled). The Job webhooks see only Jobs with a queue label, and no webhook sees
    kube-system or kueue-system, as in upstream's kustomization.
    """
    result = []
    for document in upstream:
        configuration = copy.deepcopy(document)
        configuration["metadata"] = {
            "name": WEBHOOK_CONFIGURATION_NAMES[document["kind"]],
            "labels": {"app.kubernetes.io/part-of": "kueue"},
        }
        webhooks = []
        for webhook in configuration["webhooks"]:
            if not _keep(webhook):
                continue
            path = webhook["clientConfig"]["service"]["path"]
            webhook["clientConfig"] = {
                "url": f"https://127.0.0.1:{port}{path}",
                "caBundle": base64.b64encode(ca_pem).decode(),
            }
            webhook["namespaceSelector"] = {
                "matchExpressions": [
                    {
                        "key": "kubernetes.io/metadata.name",
                        "operator": "NotIn",
                        "values": list(UNMANAGED_NAMESPACES),
                    },
                ]
            }
            if any("batch" in rule["apiGroups"] for rule in webhook["rules"]):
                webhook["objectSelector"] = {
                    "matchExpressions": [
                        {"key": KUEUE_QUEUE, "operator": "Exists"},
                    ]
                }
            webhooks.append(webhook)
        configuration["webhooks"] = webhooks
        result.append(configuration)
    return result


def namespace() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}


def load_documents(path: Path) -> list[dict[str, Any]]:
    """The YAML documents of a file (libyaml when present: Kueue's Workload CRD is 1.4 MB)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [d for d in yaml.load_all(path.read_text(), Loader=loader) if d]


def crds(directory: Path) -> list[dict[str, Any]]:
    """Kueue's CustomResourceDefinitions as shipped in its module, in name order."""
    return [doc for path in sorted(directory.glob("*.yaml")) for doc in load_documents(path)]


def ensure_metrics_certificate(directory: Path = METRICS_CERT_DIR) -> None:
    """Make sure Kueue's fixed metrics certificate path holds a key pair.

    One self-signed pair shared by every dev cluster on the machine, written once and left
    alone; nothing verifies it. It appears atomically (a finished folder renamed into place), so
    a Kueue starting meanwhile never reads half of it.
    """
    if (directory / "tls.crt").is_file() and (directory / "tls.key").is_file():
        return
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".certs-", dir=directory.parent))
    except PermissionError:
        raise DevClusterError(
            f"Kueue reads its metrics certificate from {directory} "
            "(a path fixed in Kueue) and this user may not create it: "
            f"run once `sudo install -d -o $USER {directory.parent.parent} {directory.parent}`"
        ) from None
    pki.write_self_signed(
        staging / "tls.crt", staging / "tls.key", "aiinfn-devcluster-kueue-metrics"
    )
    staging.chmod(0o755)
    try:
        staging.rename(directory)
    except OSError:
        # Another cluster's start put its pair there first.
        shutil.rmtree(staging)
