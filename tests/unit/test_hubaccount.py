"""The hub's account for a namespace: which helm-values objects bind it, how they are moved into
the namespace used, what a negative test leaves out, and the kubeconfig written for its token."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from aiinfn_dev import hubaccount
from aiinfn_dev.hubaccount import Omit

RBAC = "rbac.authorization.k8s.io/v1"
REF = "rbac.authorization.k8s.io"
HUB = {"kind": "ServiceAccount", "name": "hub", "namespace": "jhub"}
ROLE = {
    "apiVersion": RBAC,
    "kind": "Role",
    "metadata": {"name": "r", "namespace": "jhub"},
    "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
}
ROLE_BINDING = {
    "apiVersion": RBAC,
    "kind": "RoleBinding",
    "metadata": {"name": "r", "namespace": "jhub"},
    "roleRef": {"apiGroup": REF, "kind": "Role", "name": "r"},
    "subjects": [HUB],
}
CLUSTER_ROLE = {
    "apiVersion": RBAC,
    "kind": "ClusterRole",
    "metadata": {"name": "c"},
    "rules": [
        {
            "apiGroups": ["", "apps"],
            "resources": ["nodes", "pods"],
            "verbs": ["get", "list", "watch"],
        }
    ],
}
CLUSTER_BINDING = {
    "apiVersion": RBAC,
    "kind": "ClusterRoleBinding",
    "metadata": {"name": "c"},
    "roleRef": {"apiGroup": REF, "kind": "ClusterRole", "name": "c"},
    "subjects": [HUB],
}
OTHER_ROLE = {
    "apiVersion": RBAC,
    "kind": "Role",
    "metadata": {"name": "o", "namespace": "jhub"},
    "rules": [],
}
OTHER_BINDING = {
    "apiVersion": RBAC,
    "kind": "RoleBinding",
    "metadata": {"name": "o", "namespace": "jhub"},
    "roleRef": {"apiGroup": REF, "kind": "Role", "name": "o"},
    "subjects": [{"kind": "ServiceAccount", "name": "jobs", "namespace": "jhub"}],
}
CLAIM = {
    "apiVersion": "v1",
    "kind": "PersistentVolumeClaim",
    "metadata": {"name": "aiinfn-home", "namespace": "jhub"},
}
LABEL = "aiinfn.infn.it/hub-account-namespace"


def test_bound_to_hub_picks_the_bindings_naming_hub_and_their_roles_by_subject():
    documents = [
        CLAIM,
        OTHER_ROLE,
        ROLE,
        CLUSTER_ROLE,
        OTHER_BINDING,
        ROLE_BINDING,
        CLUSTER_BINDING,
    ]
    assert hubaccount.bound_to_hub(documents) == [ROLE, CLUSTER_ROLE, ROLE_BINDING, CLUSTER_BINDING]


def test_a_role_of_the_same_name_in_another_namespace_is_not_picked():
    elsewhere = {**ROLE, "metadata": {"name": "r", "namespace": "kube-system"}}
    assert hubaccount.bound_to_hub([elsewhere, ROLE_BINDING]) == [ROLE_BINDING]


def test_for_namespace_moves_namespaced_objects_and_renames_cluster_bindings():
    moved = hubaccount.for_namespace([ROLE, ROLE_BINDING, CLUSTER_ROLE, CLUSTER_BINDING], "t-1")
    assert moved == [
        {**ROLE, "metadata": {"name": "r", "namespace": "t-1"}},
        {
            **ROLE_BINDING,
            "metadata": {"name": "r", "namespace": "t-1"},
            "subjects": [{"kind": "ServiceAccount", "name": "hub", "namespace": "t-1"}],
        },
        CLUSTER_ROLE,
        {
            **CLUSTER_BINDING,
            "metadata": {"name": "c-t-1", "labels": {LABEL: "t-1"}},
            "subjects": [{"kind": "ServiceAccount", "name": "hub", "namespace": "t-1"}],
        },
    ]
    assert ROLE["metadata"]["namespace"] == "jhub"  # the originals are left as they were


def test_leave_out_one_verb_splits_the_rule_and_renames_the_shared_cluster_role():
    documents = hubaccount.for_namespace([CLUSTER_ROLE, CLUSTER_BINDING], "t-1")
    trimmed = hubaccount.leave_out(documents, [Omit("c", "nodes", verbs=("watch",))], "t-1")
    assert trimmed == [
        {
            "apiVersion": RBAC,
            "kind": "ClusterRole",
            "metadata": {"name": "c-t-1", "labels": {LABEL: "t-1"}},
            "rules": [
                {
                    "apiGroups": ["apps"],
                    "resources": ["nodes", "pods"],
                    "verbs": ["get", "list", "watch"],
                },
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]},
            ],
        },
        {**documents[1], "roleRef": {"apiGroup": REF, "kind": "ClusterRole", "name": "c-t-1"}},
    ]


def test_leave_out_a_whole_resource_of_a_namespaced_role_keeps_its_name():
    documents = hubaccount.for_namespace([ROLE, ROLE_BINDING], "t-1")
    trimmed = hubaccount.leave_out(documents, [Omit("r", "configmaps")], "t-1")
    assert trimmed == [{**documents[0], "rules": []}, documents[1]]


def test_leave_out_nothing_changes_nothing():
    documents = hubaccount.for_namespace([CLUSTER_ROLE, CLUSTER_BINDING], "t-1")
    assert hubaccount.leave_out(documents, [Omit("c", "secrets")], "t-1") == documents


def test_the_account_is_the_chart_role_then_the_helm_values_bound_to_hub():
    objects = hubaccount.hub_account_objects([CLAIM, ROLE, ROLE_BINDING, OTHER_BINDING], "t-1")
    names = [(o["kind"], o["metadata"]["name"], o["metadata"].get("namespace")) for o in objects]
    assert names == [
        ("ServiceAccount", "hub", "t-1"),
        ("Role", "hub", "t-1"),
        ("RoleBinding", "hub", "t-1"),
        ("Role", "r", "t-1"),
        ("RoleBinding", "r", "t-1"),
    ]
    assert objects[1]["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["pods", "persistentvolumeclaims", "secrets", "services"],
            "verbs": ["get", "watch", "list", "create", "delete"],
        },
        {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "watch", "list"]},
    ]


def test_the_shipped_helm_values_bind_hub_to_the_inventory_storage_and_job_roles():
    kinds = {
        (d["kind"], d["metadata"]["name"])
        for d in hubaccount.bound_to_hub(hubaccount.load_helm_values())
    }
    assert {
        ("ClusterRole", "aiinfn-hub-inventory"),
        ("ClusterRoleBinding", "aiinfn-hub-inventory"),
        ("Role", "aiinfn-hub-storage"),
        ("RoleBinding", "aiinfn-hub-storage"),
        ("Role", "aiinfn-jobs"),
        ("ClusterRole", "aiinfn-jobs-capacity"),
        ("ClusterRoleBinding", "aiinfn-jobs-capacity"),
    } <= kinds


def test_access_probes_ask_each_bindings_first_grant_where_it_applies():
    role = {
        **ROLE,
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["configmaps/status"],
                "resourceNames": ["x"],
                "verbs": ["update"],
            }
        ],
    }
    documents = hubaccount.for_namespace([role, ROLE_BINDING, CLUSTER_ROLE, CLUSTER_BINDING], "t-1")
    assert hubaccount.access_probes(documents, "t-1") == [
        {
            "verb": "update",
            "group": "",
            "resource": "configmaps",
            "subresource": "status",
            "name": "x",
            "namespace": "t-1",
        },
        {"verb": "get", "group": "", "resource": "nodes"},
    ]


ADMIN = {
    "apiVersion": "v1",
    "kind": "Config",
    "current-context": "admin",
    "clusters": [
        {"name": "other", "cluster": {"server": "https://127.0.0.1:1"}},
        {
            "name": "dev",
            "cluster": {"server": "https://127.0.0.1:16641", "certificate-authority": "pki/ca.crt"},
        },
    ],
    "users": [{"name": "admin", "user": {"client-certificate": "a.crt", "client-key": "a.key"}}],
    "contexts": [{"name": "admin", "context": {"cluster": "dev", "user": "admin"}}],
}


def test_the_kubeconfig_keeps_the_admins_cluster_and_ca_with_the_token_as_user():
    assert hubaccount.kubeconfig_with_token(ADMIN, "tok", "t-1", Path("/state")) == {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "dev",
                "cluster": {
                    "server": "https://127.0.0.1:16641",
                    "certificate-authority": "/state/pki/ca.crt",
                },
            }
        ],
        "users": [{"name": "hub@t-1", "user": {"token": "tok"}}],
        "contexts": [
            {
                "name": "hub@t-1",
                "context": {"cluster": "dev", "user": "hub@t-1", "namespace": "t-1"},
            }
        ],
        "current-context": "hub@t-1",
    }


def _jwt(claims: dict) -> str:
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"eyJhbGciOiJSUzI1NiJ9.{body}.c2ln"


def test_token_subject_tells_the_hub_account_from_the_admin():
    sub = "system:serviceaccount:t-1:hub"
    assert (
        hubaccount.token_subject(
            hubaccount.kubeconfig_with_token(ADMIN, _jwt({"sub": sub}), "t-1", Path("/"))
        )
        == sub
        == hubaccount.account_name("t-1")
    )
    assert hubaccount.token_subject(ADMIN) is None
    assert (
        hubaccount.token_subject(
            hubaccount.kubeconfig_with_token(ADMIN, "static-token", "t-1", Path("/"))
        )
        is None
    )
