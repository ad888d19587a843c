"""What the hub's Kubernetes account must be allowed to do, and which code path needs each rule.

Two tables: the hub process (KubeSpawner, the inventory watch, the identity record, the
access-token Secrets, crash reports, its start check) and the job service, which JupyterHub runs
as a managed service in the hub pod with the same account. `aiinfn-hub check` and the hub's start
check ask the API server about each entry (a SelfSubjectAccessReview); a unit test checks that the
RBAC objects we ship (helm-values/, plus the z2jh chart's hub Role) grant every one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CLUSTER = "cluster"
NAMESPACE = "namespace"


@dataclass(frozen=True)
class Permission:
    """One verb on one resource. `cluster`: cluster-scoped objects or every namespace (a
    ClusterRoleBinding must grant it); otherwise in the hub's namespace. `optional`: the code
    path still works without it, degraded (a missing one is a warning, not an error)."""

    verb: str
    resource: str
    why: str
    group: str = ""
    subresource: str = ""
    name: str = ""
    cluster: bool = False
    optional: bool = False

    def describe(self, namespace: str) -> str:
        """ "get pods/log in namespace jhub", "watch nodes (cluster-wide)"."""
        resource = f"{self.resource}.{self.group}" if self.group else self.resource
        if self.subresource:
            resource += f"/{self.subresource}"
        if self.name:
            resource += f" {self.name}"
        where = "(cluster-wide)" if self.cluster else f"in namespace {namespace}"
        return f"{self.verb} {resource} {where}"


def _rules(verbs: str, resource: str, why: str, **kwargs: Any) -> tuple[Permission, ...]:
    return tuple(Permission(verb, resource, why, **kwargs) for verb in verbs.split())


def hub_permissions(identity_configmap: str) -> tuple[Permission, ...]:
    """The hub process's needs; the identity record's ConfigMap is named by AiInfnStorage."""
    return (
        *_rules("list watch create delete", "pods", "spawner: notebook pods (KubeSpawner)"),
        *_rules("list watch", "events", "spawner: the spawn page's progress messages"),
        *_rules("get", "pods", "spawner: a crashed server's last log lines", subresource="log"),
        *_rules("create", "configmaps", "identity record: its ConfigMap made on first use"),
        *_rules(
            "get update",
            "configmaps",
            "identity record: uid/gid handed out",
            name=identity_configmap,
        ),
        *_rules("create update delete", "secrets", "access-token Secrets of the users' servers"),
        *_rules(
            "list watch", "nodes", "inventory watch: accelerators each node offers", cluster=True
        ),
        *_rules("list watch", "pods", "inventory watch: accelerators in use", cluster=True),
        *_rules(
            "get",
            "priorityclasses",
            "start check: the notebook and job PriorityClasses",
            group="scheduling.k8s.io",
            cluster=True,
        ),
        *_rules("list", "persistentvolumeclaims", "start check: the storage claims"),
    )


def jobs_permissions() -> tuple[Permission, ...]:
    """The job service's needs (helm-values/jobs-service-rbac.yaml); its identity record reads
    and writes are the hub's own."""
    kueue = "kueue.x-k8s.io"
    capacity = "job service capacity check: what the cluster could ever run"
    return (
        *_rules(
            "create get list delete",
            "jobs",
            "job service: jobs (submit, list, cancel)",
            group="batch",
        ),
        *_rules(
            "create get list update patch delete",
            "configmaps",
            "job service: each job's sandbox files",
        ),
        *_rules(
            "list", "workloads", "job service: each job's admission and queue place", group=kueue
        ),
        *_rules("list", "pods", "job service: job pods; clones read the notebook pod"),
        *_rules("get", "pods", "job service: job logs", subresource="log"),
        *_rules("list", "localqueues", capacity, group=kueue, optional=True),
        *_rules("list", "clusterqueues", capacity, group=kueue, cluster=True, optional=True),
        *_rules("list", "resourceflavors", capacity, group=kueue, cluster=True, optional=True),
        *_rules("list", "nodes", capacity, cluster=True, optional=True),
    )


def _matches(values: Iterable[str], wanted: str) -> bool:
    return any(value in ("*", wanted) for value in values)


def _resource_matches(resources: Iterable[str], permission: Permission) -> bool:
    if not permission.subresource:
        return _matches(resources, permission.resource)
    full = f"{permission.resource}/{permission.subresource}"
    return any(r in ("*", full, f"*/{permission.subresource}") for r in resources)


def rule_grants(rule: Mapping[str, Sequence[str]], permission: Permission) -> bool:
    """True if one RBAC PolicyRule allows the permission, by Kubernetes' matching ('*' for any
    group, resource or verb, and `*/subresource`; resourceNames limit a rule to those names,
    so it never grants a create or a list)."""
    names = rule.get("resourceNames") or ()
    return (
        _matches(rule.get("apiGroups") or (), permission.group)
        and _resource_matches(rule.get("resources") or (), permission)
        and _matches(rule.get("verbs") or (), permission.verb)
        and (not names or (bool(permission.name) and permission.name in names))
    )


def granted(
    grants: Iterable[tuple[str, Mapping[str, Sequence[str]]]], permission: Permission
) -> bool:
    """True if any (scope, rule) grants it; a cluster-wide permission needs a CLUSTER scope
    (a ClusterRoleBinding), a namespaced one either."""
    return any(
        rule_grants(rule, permission) and (scope == CLUSTER or not permission.cluster)
        for scope, rule in grants
    )
