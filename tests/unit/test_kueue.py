"""Kueue's configuration, command line and webhook registrations are pure builders, compared
literally."""

import base64
from pathlib import Path

import pytest
import yaml
from aiinfn_dev.devcluster import kueue
from aiinfn_dev.devcluster.errors import DevClusterError

from aiinfn_hub.services.jobs.app import AiInfnJobs

HELM_VALUES = Path(__file__).resolve().parents[2] / "helm-values"
PORTS = kueue.KueuePorts(webhook=1, health=2, metrics=3)
NOT_SYSTEM = {
    "matchExpressions": [
        {
            "key": "kubernetes.io/metadata.name",
            "operator": "NotIn",
            "values": ["kueue-system", "kube-system"],
        }
    ]
}


def test_configuration_binds_loopback_needs_no_secret_or_visibility_server_requeues_soon():
    assert kueue.configuration(PORTS, Path("/c/kueue-certs")) == {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": "kueue-system",
        "health": {"healthProbeBindAddress": "127.0.0.1:2"},
        "metrics": {"bindAddress": "127.0.0.1:3"},
        "webhook": {"host": "127.0.0.1", "port": 1, "certDir": "/c/kueue-certs"},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "manageJobsWithoutQueueName": False,
        "managedJobsNamespaceSelector": NOT_SYSTEM,
        "integrations": {"frameworks": ["batch/job"]},
        "waitForPodsReady": {
            "timeout": "30m",
            "recoveryTimeout": "30s",
            "requeuingStrategy": {
                "timestamp": "Eviction",
                "backoffBaseSeconds": 10,
                "backoffMaxSeconds": 300,
            },
        },
        "featureGates": {"VisibilityOnDemand": False},
    }


def test_the_shipped_configuration_requeues_after_the_job_grace_and_the_dev_one_alike():
    """helm-values/kueue-values.yaml: a job stopped for a notebook is requeued only after its pod
    had its grace and the notebook its node; the dev cluster sets the same fields, shorter."""
    values = yaml.safe_load((HELM_VALUES / "kueue-values.yaml").read_text())
    shipped = yaml.safe_load(values["managerConfig"]["controllerManagerConfigYaml"])
    assert shipped["apiVersion"] == "config.kueue.x-k8s.io/v1beta2"
    assert shipped["manageJobsWithoutQueueName"] is False
    assert shipped["integrations"] == {"frameworks": ["batch/job"]}
    ready = shipped["waitForPodsReady"]
    grace = AiInfnJobs.class_traits()["preemption_grace_seconds"].default_value
    assert ready["recoveryTimeout"] == "60s" and 60 >= grace + 30
    assert ready.keys() == kueue.WAIT_FOR_PODS_READY.keys()
    assert (
        ready["requeuingStrategy"].keys() == kueue.WAIT_FOR_PODS_READY["requeuingStrategy"].keys()
    )


def test_argv():
    assert kueue.argv(Path("/b/kueue"), Path("/c/kueue.yaml"), Path("/c/kueue.kubeconfig")) == [
        "/b/kueue",
        "--config=/c/kueue.yaml",
        "--kubeconfig=/c/kueue.kubeconfig",
        "--zap-log-level=info",
    ]


def _webhook(name: str, group: str, resource: str, path: str) -> dict:
    return {
        "admissionReviewVersions": ["v1"],
        "clientConfig": {
            "service": {"name": "webhook-service", "namespace": "system", "path": path}
        },
        "failurePolicy": "Fail",
        "name": name,
        "rules": [
            {
                "apiGroups": [group],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": [resource],
            }
        ],
        "sideEffects": "None",
    }


UPSTREAM = [
    {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "mutating-webhook-configuration"},
        "webhooks": [
            _webhook("mjob.kb.io", "batch", "jobs", "/mutate-batch-v1-job"),
            _webhook("mpod.kb.io", "", "pods", "/mutate--v1-pod"),
            _webhook("mdeployment.kb.io", "apps", "deployments", "/mutate-apps-v1-deployment"),
        ],
    },
    {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "validating-webhook-configuration"},
        "webhooks": [
            _webhook(
                "vclusterqueue.kb.io",
                "kueue.x-k8s.io",
                "clusterqueues",
                "/validate-kueue-x-k8s-io-v1beta2-clusterqueue",
            ),
            _webhook("vjobset.kb.io", "jobset.x-k8s.io", "jobsets", "/validate-jobset"),
        ],
    },
]


def test_webhooks_are_registered_by_url_for_kueue_objects_and_queued_jobs_only():
    ca = base64.b64encode(b"CA PEM").decode()
    mutating, validating = kueue.webhook_configurations(UPSTREAM, 9443, b"CA PEM")
    assert mutating == {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {
            "name": "kueue-mutating-webhook-configuration",
            "labels": {"app.kubernetes.io/part-of": "kueue"},
        },
        "webhooks": [
            {
                "admissionReviewVersions": ["v1"],
                "clientConfig": {
                    "url": "https://127.0.0.1:9443/mutate-batch-v1-job",
                    "caBundle": ca,
                },
                "failurePolicy": "Fail",
                "name": "mjob.kb.io",
                "rules": [
                    {
                        "apiGroups": ["batch"],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["jobs"],
                    }
                ],
                "sideEffects": "None",
                "namespaceSelector": NOT_SYSTEM,
                "objectSelector": {
                    "matchExpressions": [{"key": "kueue.x-k8s.io/queue-name", "operator": "Exists"}]
                },
            }
        ],
    }
    assert validating == {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {
            "name": "kueue-validating-webhook-configuration",
            "labels": {"app.kubernetes.io/part-of": "kueue"},
        },
        "webhooks": [
            {
                "admissionReviewVersions": ["v1"],
                "clientConfig": {
                    "url": "https://127.0.0.1:9443/validate-kueue-x-k8s-io-v1beta2-clusterqueue",
                    "caBundle": ca,
                },
                "failurePolicy": "Fail",
                "name": "vclusterqueue.kb.io",
                "rules": [
                    {
                        "apiGroups": ["kueue.x-k8s.io"],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["clusterqueues"],
                    }
                ],
                "sideEffects": "None",
                "namespaceSelector": NOT_SYSTEM,
            }
        ],
    }
    # The upstream documents are left as they were.
    assert UPSTREAM[0]["webhooks"][0]["clientConfig"]["service"]["name"] == "webhook-service"


def test_metrics_certificate_is_written_once_and_then_left_alone(tmp_path):
    directory = tmp_path / "etc" / "kueue" / "metrics" / "certs"
    kueue.ensure_metrics_certificate(directory)
    first = (directory / "tls.crt").read_bytes()
    assert first.startswith(b"-----BEGIN CERTIFICATE-----")
    assert (directory / "tls.key").stat().st_mode & 0o077 == 0
    kueue.ensure_metrics_certificate(directory)
    assert (directory / "tls.crt").read_bytes() == first
    assert [p.name for p in directory.parent.iterdir()] == ["certs"]  # no staging folder left


def test_metrics_certificate_folder_with_other_content_is_not_touched(tmp_path):
    directory = tmp_path / "certs"
    directory.mkdir()
    (directory / "tls.crt").write_text("theirs")
    kueue.ensure_metrics_certificate(directory)
    assert (directory / "tls.crt").read_text() == "theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["certs"]


def test_metrics_certificate_path_not_writable_names_the_fix(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(kueue.tempfile, "mkdtemp", refuse)
    with pytest.raises(
        DevClusterError, match=r"sudo install -d -o \$USER .*/kueue .*/kueue/metrics"
    ):
        kueue.ensure_metrics_certificate(tmp_path / "kueue" / "metrics" / "certs")
