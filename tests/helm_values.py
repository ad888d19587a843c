"""helm-values/ read for the tests: the cluster objects of every file, and the chart values with
the Kubernetes objects their pieces become in the z2jh chart (4.4.0 templates)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
HELM_VALUES = REPO / "helm-values"
VALUES = HELM_VALUES / "values.yaml"
# Values for Kueue's own chart, not cluster objects (tests/unit/test_kueue.py reads them).
KUEUE_VALUES = HELM_VALUES / "kueue-values.yaml"
# Prometheus's rule file, not cluster objects (tests/monitoring/test_rules.py checks it).
PROMETHEUS_RULES = HELM_VALUES / "prometheus-rules.yaml"
NAMESPACE = "jhub"
# The job service's port: hub Service, network policies and the service's bind address agree.
JOBS_PORT = 10101
# The backup service's, likewise.
BACKUP_PORT = 10102


def object_files() -> list[Path]:
    """Every file of cluster objects (all but the charts' values)."""
    not_objects = (VALUES, KUEUE_VALUES, PROMETHEUS_RULES)
    return sorted(p for p in HELM_VALUES.glob("*.yaml") if p not in not_objects)


def objects(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def values() -> dict:
    return yaml.safe_load(VALUES.read_text())


def into_namespace(document: dict, namespace: str) -> dict:
    """The object as it would be in `namespace`: namespaced objects move there, and so do the
    subjects of role bindings (cluster-wide objects otherwise stay as written)."""
    moved = copy.deepcopy(document)
    if "namespace" in moved["metadata"]:
        moved["metadata"]["namespace"] = namespace
        for subject in moved.get("subjects", []):
            subject["namespace"] = namespace
    return moved


def helm_merge(defaults: Any, overrides: Any) -> Any:
    """Helm's merge of user values over a chart's: maps merge key by key, anything else is
    replaced, and a null removes the chart's key."""
    if not isinstance(defaults, dict) or not isinstance(overrides, dict):
        return copy.deepcopy(overrides)
    merged = copy.deepcopy(defaults)
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = helm_merge(merged.get(key), value)
    return merged


def env_list(extra_env: dict[str, Any]) -> list[dict]:
    """`extraEnv` as the chart writes it into a container (jupyterhub.extraEnv): a map value is
    an EnvVar named by its key unless it names itself, a string a plain value."""
    return [
        ({"name": name, **value} if isinstance(value, dict) else {"name": name, "value": value})
        for name, value in extra_env.items()
    ]


def component_labels(component: str) -> dict[str, str]:
    """The labels the chart puts on its pods (modern ones, release aside)."""
    return {"app.kubernetes.io/name": "jupyterhub", "app.kubernetes.io/component": component}


def network_policy(name: str, component: str, policy: dict) -> dict:
    """A NetworkPolicy with a chart section's extra rules (networkPolicy.ingress, .egress)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name},
        "spec": {
            "podSelector": {"matchLabels": component_labels(component)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": policy.get("ingress", []),
            "egress": policy.get("egress", []),
        },
    }


def rendered_pieces(chart_values: dict) -> list[dict]:
    """The Kubernetes objects the values' native pieces end up in: the hub Service's ports, the
    hub's, proxy's and notebooks' extra network rules, the hub's and notebooks' environment."""
    hub, proxy, singleuser = chart_values["hub"], chart_values["proxy"], chart_values["singleuser"]
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "hub"},
        "spec": {
            "selector": component_labels("hub"),
            "ports": [
                {"name": "hub", "port": 8081, "targetPort": "http"},
                *hub["service"]["extraPorts"],
            ],
        },
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hub-env"},
        "spec": {
            "automountServiceAccountToken": False,
            "containers": [
                _container("hub", env_list(hub["extraEnv"])),
                _container("notebook", env_list(singleuser["extraEnv"])),
            ],
        },
    }
    return [
        service,
        pod,
        network_policy("hub", "hub", hub["networkPolicy"]),
        network_policy("proxy", "proxy", proxy["chp"]["networkPolicy"]),
        network_policy("singleuser", "singleuser-server", singleuser["networkPolicy"]),
    ]


def _container(name: str, env: list[dict]) -> dict:
    return {
        "name": name,
        "image": "registry.invalid/aiinfn/test:1",
        "env": env,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
