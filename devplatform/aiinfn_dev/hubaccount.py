"""The hub's Kubernetes account as an installation gives it, and a kubeconfig with its token.

In a z2jh installation the hub (and the job service, a managed service in the hub pod) talks to
Kubernetes as the ServiceAccount `hub`, bound to the chart's hub Role and to the RBAC objects of
helm-values/ whose subjects name `hub`. The tests and the demo run their hubs with exactly that
account in the namespace the hub spawns into, never as the cluster admin, so a permission the
shipped RBAC lacks fails there first. Bindings are found by their subjects, not by file name.

helm-values/ names the hub's namespace by a placeholder; here every namespaced object moves into
the namespace used, and each ClusterRoleBinding gets that namespace appended to its name (so
namespaces used side by side don't overwrite each other's subjects). Those cluster-wide objects
outlive the namespace: `delete_cluster_objects` removes them. ClusterRoles are applied as they
are, except one that a negative test trims (`Omit`), which is renamed like the bindings.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.utils import create_from_dict

from aiinfn_hub import labels

HELM_VALUES = Path(__file__).resolve().parents[2] / "helm-values"
ACCOUNT = "hub"
RBAC_GROUP = "rbac.authorization.k8s.io"
BINDING_KINDS = ("RoleBinding", "ClusterRoleBinding")
# On the cluster-wide objects made for one namespace, so they can be found and removed.
FOR_NAMESPACE = f"{labels.PREFIX}/hub-account-namespace"
TOKEN_SECONDS = 24 * 3600
PLACEHOLDER = "jhub"

# The z2jh chart's hub account (chart 4.4.0: jupyterhub/templates/hub/serviceaccount.yaml and
# rbac.yaml, with the default names and rbac.create), transcribed as data.
CHART_VERSION = "4.4.0"
CHART_HUB_ACCOUNT: tuple[dict, ...] = (
    {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": ACCOUNT, "namespace": PLACEHOLDER},
    },
    {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "Role",
        "metadata": {"name": "hub", "namespace": PLACEHOLDER},
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["pods", "persistentvolumeclaims", "secrets", "services"],
                "verbs": ["get", "watch", "list", "create", "delete"],
            },
            {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "watch", "list"]},
        ],
    },
    {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "hub", "namespace": PLACEHOLDER},
        "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": PLACEHOLDER}],
        "roleRef": {"kind": "Role", "name": "hub", "apiGroup": RBAC_GROUP},
    },
)


@dataclass(frozen=True)
class Omit:
    """A grant a negative test leaves out: `verbs` (every verb if none) on `resource` of API
    group `group`, from the Role or ClusterRole named `role`."""

    role: str
    resource: str
    group: str = ""
    verbs: tuple[str, ...] = ()


def load_helm_values(folder: Path = HELM_VALUES) -> list[dict]:
    """Every document of helm-values/*.yaml, in file-name order."""
    return [
        d
        for path in sorted(folder.glob("*.yaml"))
        for d in yaml.safe_load_all(path.read_text())
        if d
    ]


def _names_account(binding: dict) -> bool:
    return any(
        s.get("kind") == "ServiceAccount" and s.get("name") == ACCOUNT
        for s in binding.get("subjects") or ()
    )


def bound_to_hub(documents: Iterable[dict]) -> list[dict]:
    """The bindings whose subjects name the ServiceAccount `hub`, and the roles they refer to
    (a Role in the binding's namespace, or a ClusterRole), in document order."""
    documents = list(documents)
    bindings = [d for d in documents if d.get("kind") in BINDING_KINDS and _names_account(d)]
    wanted = {
        (
            b["roleRef"]["kind"],
            b["roleRef"]["name"],
            b["metadata"].get("namespace") if b["roleRef"]["kind"] == "Role" else None,
        )
        for b in bindings
    }
    chosen = {id(b) for b in bindings}
    return [
        d
        for d in documents
        if id(d) in chosen
        or (
            d.get("kind") in ("Role", "ClusterRole")
            and (d["kind"], d["metadata"]["name"], d["metadata"].get("namespace")) in wanted
        )
    ]


def for_namespace(documents: Iterable[dict], namespace: str) -> list[dict]:
    """The documents for a hub in `namespace`: namespaced objects moved there, ServiceAccount
    subjects pointed there, ClusterRoleBindings renamed and labelled for it."""
    result = []
    for original in documents:
        document = copy.deepcopy(original)
        metadata = document["metadata"]
        if document["kind"] == "ClusterRoleBinding":
            _mark(metadata, namespace)
        elif document["kind"] != "ClusterRole":
            metadata["namespace"] = namespace
        for subject in document.get("subjects") or ():
            if subject.get("kind") == "ServiceAccount":
                subject["namespace"] = namespace
        result.append(document)
    return result


def _mark(metadata: dict, namespace: str) -> None:
    metadata["name"] = f"{metadata['name']}-{namespace}"
    metadata["labels"] = {**metadata.get("labels", {}), FOR_NAMESPACE: namespace}


def _rule_without(rule: dict, omit: Omit) -> list[dict]:
    """One PolicyRule with the omitted grant taken out (split into the rules that remain)."""
    groups, resources = rule.get("apiGroups") or [], rule.get("resources") or []
    if omit.group not in groups or omit.resource not in resources:
        return [rule]
    other_groups = [g for g in groups if g != omit.group]
    other_resources = [r for r in resources if r != omit.resource]
    verbs = [v for v in rule["verbs"] if omit.verbs and v not in omit.verbs]
    parts = [{**rule, "apiGroups": other_groups}] if other_groups else []
    if other_resources:
        parts.append({**rule, "apiGroups": [omit.group], "resources": other_resources})
    if verbs:
        parts.append(
            {**rule, "apiGroups": [omit.group], "resources": [omit.resource], "verbs": verbs}
        )
    return parts


def leave_out(documents: Iterable[dict], omits: Iterable[Omit], namespace: str) -> list[dict]:
    """The documents with the omitted grants removed from their roles. A ClusterRole changed so
    is shared by every namespace, so its trimmed copy is renamed for this namespace (and the
    bindings here that refer to it follow)."""
    omits = tuple(omits)
    result, renamed = [], {}
    for original in documents:
        document = copy.deepcopy(original)
        name = document["metadata"]["name"]
        if document["kind"] in ("Role", "ClusterRole"):
            for omit in (o for o in omits if o.role == name):
                document["rules"] = [
                    part
                    for rule in document.get("rules") or ()
                    for part in _rule_without(rule, omit)
                ]
            if document["kind"] == "ClusterRole" and document != original:
                _mark(document["metadata"], namespace)
                renamed[name] = document["metadata"]["name"]
        result.append(document)
    for document in result:
        ref = document.get("roleRef")
        if ref and ref["kind"] == "ClusterRole" and ref["name"] in renamed:
            ref["name"] = renamed[ref["name"]]
    return result


def hub_account_objects(
    helm_values: Iterable[dict], namespace: str, omits: Iterable[Omit] = ()
) -> list[dict]:
    """Everything the hub's account is in `namespace`: the chart's ServiceAccount, Role and
    binding, then every helm-values RBAC object bound to `hub`."""
    documents = [*CHART_HUB_ACCOUNT, *bound_to_hub(helm_values)]
    return leave_out(for_namespace(documents, namespace), omits, namespace)


def access_probes(documents: Iterable[dict], namespace: str) -> list[dict]:
    """One resourceAttributes per binding: the first grant of the role it refers to, asked of
    the API server until RBAC's cache has the new binding."""
    roles = {
        (d["kind"], d["metadata"]["name"]): d
        for d in documents
        if d["kind"] in ("Role", "ClusterRole")
    }
    probes = []
    for binding in (d for d in documents if d["kind"] in BINDING_KINDS):
        ref = binding["roleRef"]
        rules = roles.get((ref["kind"], ref["name"]), {}).get("rules") or ()
        if not rules:
            continue
        rule = rules[0]
        resource, _, subresource = rule["resources"][0].partition("/")
        probe = {"verb": rule["verbs"][0], "group": rule["apiGroups"][0], "resource": resource}
        if subresource:
            probe["subresource"] = subresource
        if rule.get("resourceNames"):
            probe["name"] = rule["resourceNames"][0]
        if binding["kind"] == "RoleBinding":
            probe["namespace"] = namespace
        probes.append(probe)
    return probes


def kubeconfig_with_token(admin: dict, token: str, namespace: str, base: Path) -> dict:
    """A kubeconfig for the admin's current cluster (server and CA; a relative CA path made
    absolute against `base`, the admin kubeconfig's folder) with the token as its only user."""
    current = next(c["context"] for c in admin["contexts"] if c["name"] == admin["current-context"])
    cluster = copy.deepcopy(next(c for c in admin["clusters"] if c["name"] == current["cluster"]))
    authority = cluster["cluster"].get("certificate-authority")
    if authority:
        cluster["cluster"]["certificate-authority"] = str(base / authority)
    user = f"{ACCOUNT}@{namespace}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {
                "name": user,
                "context": {"cluster": cluster["name"], "user": user, "namespace": namespace},
            }
        ],
        "current-context": user,
    }


def token_subject(kubeconfig: dict) -> str | None:
    """Who the current user's bearer token says it is (its JWT `sub`, unverified: a test guard,
    not authentication); None for a user without a token (a client certificate: the admin) or
    with one that is not a JWT."""
    current = next(
        c["context"] for c in kubeconfig["contexts"] if c["name"] == kubeconfig["current-context"]
    )
    user = next(u["user"] for u in kubeconfig["users"] if u["name"] == current["user"])
    if set(user) != {"token"}:
        return None
    parts = user["token"].split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    return json.loads(base64.urlsafe_b64decode(payload)).get("sub")


def account_name(namespace: str) -> str:
    """The user name the API server gives the ServiceAccount `hub` of `namespace`."""
    return f"system:serviceaccount:{namespace}:{ACCOUNT}"


async def _wait_granted(
    api_client: client.ApiClient, namespace: str, probes: list[dict], limit: float = 60.0
) -> None:
    """Ask, as the admin, whether the account may do each probe until RBAC says yes (a new
    binding reaches the authorizer's cache a moment after it is stored)."""
    authorization = client.AuthorizationV1Api(api_client)
    deadline = time.monotonic() + limit
    for probe in probes:
        body = {"spec": {"user": account_name(namespace), "resourceAttributes": probe}}
        while not (await authorization.create_subject_access_review(body)).status.allowed:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the hub account in {namespace} was never granted {probe}")
            await asyncio.sleep(0.2)


async def hub_kubeconfig(
    api_client: client.ApiClient,
    namespace: str,
    admin_kubeconfig: Path,
    path: Path,
    *,
    without: Iterable[Omit] = (),
    helm_values: Path = HELM_VALUES,
) -> Path:
    """Give `namespace` the hub's account (applied with the admin's `api_client`), wait until
    RBAC grants it, and write to `path` (mode 0600) a kubeconfig with a 24-hour token of it."""
    documents = hub_account_objects(load_helm_values(helm_values), namespace, without)
    for document in documents:
        await create_from_dict(api_client, document, apply=True)
    await _wait_granted(api_client, namespace, access_probes(documents, namespace))
    answer = await client.CoreV1Api(api_client).create_namespaced_service_account_token(
        ACCOUNT, namespace, {"spec": {"audiences": [], "expirationSeconds": TOKEN_SECONDS}}
    )
    admin = yaml.safe_load(Path(admin_kubeconfig).read_text())
    config = kubeconfig_with_token(
        admin, answer.status.token, namespace, Path(admin_kubeconfig).resolve().parent
    )
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # a file already there keeps its mode through os.open
    with os.fdopen(descriptor, "w") as file:
        yaml.safe_dump(config, file)
    return path


async def delete_cluster_objects(api_client: client.ApiClient, namespace: str) -> None:
    """Remove the ClusterRoleBindings (and trimmed ClusterRoles) made for `namespace`: they
    outlive it."""
    rbac = client.RbacAuthorizationV1Api(api_client)
    selector = f"{FOR_NAMESPACE}={namespace}"
    for binding in (await rbac.list_cluster_role_binding(label_selector=selector)).items:
        await rbac.delete_cluster_role_binding(binding.metadata.name)
    for role in (await rbac.list_cluster_role(label_selector=selector)).items:
        await rbac.delete_cluster_role(role.metadata.name)
