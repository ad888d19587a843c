"""The permission table against the RBAC we ship, and the pure judgements of `aiinfn-hub check`."""

from __future__ import annotations

import argparse
import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from traitlets.config import Config

from aiinfn_hub import catalog, checks
from aiinfn_hub.checks import ERROR, OK, WARNING, Finding
from aiinfn_hub.permissions import (
    CLUSTER,
    NAMESPACE,
    Permission,
    granted,
    hub_permissions,
    jobs_permissions,
    rule_grants,
)
from aiinfn_hub.storage_config import StorageSettings

REPO = Path(__file__).resolve().parents[2]
CATALOG = catalog.load(catalog.default_path())
HUB_ACCOUNT = ("jhub", "hub")

# The z2jh chart's hub Role (jupyterhub/templates/hub/rbac.yaml, chart 4.4.0), bound to the
# hub's service account in its namespace: what KubeSpawner needs.
Z2JH_HUB_ROLE = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "Role",
    "metadata": {"name": "hub", "namespace": "jhub"},
    "rules": [
        {
            "apiGroups": [""],
            "resources": ["pods", "persistentvolumeclaims", "secrets", "services"],
            "verbs": ["get", "watch", "list", "create", "delete"],
        },
        {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "watch", "list"]},
    ],
}
Z2JH_HUB_ROLE_BINDING = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "RoleBinding",
    "metadata": {"name": "hub", "namespace": "jhub"},
    "subjects": [{"kind": "ServiceAccount", "name": "hub", "namespace": "jhub"}],
    "roleRef": {"kind": "Role", "name": "hub", "apiGroup": "rbac.authorization.k8s.io"},
}


def shipped(kind: str) -> list[dict]:
    """The objects of one kind among helm-values/*.yaml."""
    return [
        d
        for path in sorted((REPO / "helm-values").glob("*.yaml"))
        for d in yaml.safe_load_all(path.read_text())
        if d and d.get("kind") == kind
    ]


def shipped_rbac() -> list[dict]:
    """Every RBAC object of helm-values/, and z2jh's hub Role and binding."""
    kinds = ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")
    return [Z2JH_HUB_ROLE, Z2JH_HUB_ROLE_BINDING, *(d for kind in kinds for d in shipped(kind))]


def grants_to(documents: list[dict], account: tuple[str, str]) -> list[tuple[str, dict]]:
    """(scope, rule) for every rule bound to the service account (namespace, name): a
    ClusterRoleBinding grants cluster-wide, a RoleBinding in the account's namespace only."""
    roles = {
        (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d
        for d in documents
        if d["kind"] in ("Role", "ClusterRole")
    }
    grants = []
    for binding in documents:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(
            s.get("kind") == "ServiceAccount" and (s.get("namespace"), s["name"]) == account
            for s in binding.get("subjects") or ()
        ):
            continue
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace") if ref["kind"] == "Role" else None
        role = roles.get((ref["kind"], namespace, ref["name"]))
        assert role is not None, f"{binding['metadata']['name']} binds a role that is not shipped"
        scope = CLUSTER if binding["kind"] == "ClusterRoleBinding" else NAMESPACE
        grants += [(scope, rule) for rule in role.get("rules") or ()]
    return grants


def test_the_shipped_rbac_grants_every_permission_the_hub_and_the_job_service_need():
    """Cluster-wide reads (the inventory watch's nodes and pods, the start check's
    PriorityClasses) need a ClusterRole and a ClusterRoleBinding (helm-values/hub-rbac.yaml)."""
    grants = grants_to(shipped_rbac(), HUB_ACCOUNT)
    needed = [*hub_permissions(StorageSettings().identity_configmap), *jobs_permissions()]
    missing = [f"{p.describe('jhub')} ({p.why})" for p in needed if not granted(grants, p)]
    assert not missing, "not granted by helm-values/ and z2jh's hub Role:\n" + "\n".join(missing)


def test_every_permission_says_which_code_path_needs_it():
    for permission in [*hub_permissions("aiinfn-identities"), *jobs_permissions()]:
        assert permission.why and len(permission.why) <= 80
        assert permission.verb in {"get", "list", "watch", "create", "update", "patch", "delete"}


@pytest.mark.parametrize(
    "permission, text",
    [
        (Permission("get", "pods", "x", subresource="log"), "get pods/log in namespace jhub"),
        (Permission("watch", "nodes", "x", cluster=True), "watch nodes (cluster-wide)"),
        (
            Permission("get", "configmaps", "x", name="aiinfn-identities"),
            "get configmaps aiinfn-identities in namespace jhub",
        ),
        (
            Permission("list", "workloads", "x", group="kueue.x-k8s.io"),
            "list workloads.kueue.x-k8s.io in namespace jhub",
        ),
    ],
)
def test_a_permission_is_described_the_way_an_admin_writes_a_rule(permission, text):
    assert permission.describe("jhub") == text


LOG = Permission("get", "pods", "crash reports", subresource="log")
PODS = Permission("list", "pods", "spawner")
NAMED = Permission("get", "configmaps", "identity record", name="aiinfn-identities")
CREATE = Permission("create", "configmaps", "identity record")
FLAVORS = Permission("list", "resourceflavors", "capacity", group="kueue.x-k8s.io", cluster=True)


@pytest.mark.parametrize(
    "rule, permission, expected",
    [
        ({"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}, PODS, True),
        ({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}, PODS, False),
        ({"apiGroups": ["apps"], "resources": ["pods"], "verbs": ["list"]}, PODS, False),
        ({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, PODS, True),
        # A subresource is its own resource: pods does not grant pods/log; "*" and "*/log" do.
        ({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}, LOG, False),
        ({"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}, LOG, True),
        ({"apiGroups": [""], "resources": ["*/log"], "verbs": ["get"]}, LOG, True),
        ({"apiGroups": [""], "resources": ["*"], "verbs": ["get"]}, LOG, True),
        ({"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["get"]}, LOG, False),
        # resourceNames grant those names only, so never a create.
        (
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": ["aiinfn-identities"],
                "verbs": ["get"],
            },
            NAMED,
            True,
        ),
        (
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": ["other"],
                "verbs": ["get"],
            },
            NAMED,
            False,
        ),
        (
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": ["aiinfn-identities"],
                "verbs": ["create"],
            },
            CREATE,
            False,
        ),
        ({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}, NAMED, True),
        (
            {
                "apiGroups": ["kueue.x-k8s.io"],
                "resources": ["resourceflavors"],
                "verbs": ["get", "list"],
            },
            FLAVORS,
            True,
        ),
    ],
)
def test_rbac_rules_match_as_kubernetes_matches_them(rule, permission, expected):
    assert rule_grants(rule, permission) is expected


def test_a_cluster_wide_permission_needs_a_cluster_role_binding():
    rule = {"apiGroups": ["kueue.x-k8s.io"], "resources": ["resourceflavors"], "verbs": ["list"]}
    assert not granted([(NAMESPACE, rule)], FLAVORS)
    assert granted([(CLUSTER, rule)], FLAVORS)
    pods = {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}
    assert granted([(CLUSTER, pods)], PODS)  # a ClusterRoleBinding grants in every namespace


def test_only_bindings_of_the_hub_account_count():
    documents = [
        Z2JH_HUB_ROLE,
        {
            **Z2JH_HUB_ROLE_BINDING,
            "subjects": [{"kind": "ServiceAccount", "name": "hub", "namespace": "elsewhere"}],
        },
    ]
    assert grants_to(documents, HUB_ACCOUNT) == []
    assert len(grants_to([Z2JH_HUB_ROLE, Z2JH_HUB_ROLE_BINDING], HUB_ACCOUNT)) == 2


# -- findings ------------------------------------------------------------------------------------


def test_findings_are_one_line_each_and_errors_set_the_exit_status():
    findings = [Finding(OK, "config", "valid"), Finding(WARNING, "nodes", "no node offers 'h100'")]
    assert [f.line() for f in findings] == [
        "ok config: valid",
        "WARNING nodes: no node offers 'h100'",
    ]
    assert checks.exit_status(findings) == 0
    assert checks.exit_status([*findings, Finding(ERROR, "permission", "the hub may not ...")]) == 1


def test_at_start_only_configuration_credentials_permissions_and_priority_classes_stop_the_hub():
    findings = [
        Finding(ERROR, area, "x")
        for area in ("config", "cluster", "permission", "priority", "kueue", "nodes", "storage")
    ]
    levels = {f.area: f.level for f in checks.at_start(findings)}
    assert levels == {
        "config": ERROR,
        "cluster": ERROR,
        "permission": ERROR,
        "priority": ERROR,
        "kueue": WARNING,
        "nodes": WARNING,
        "storage": WARNING,
    }
    assert checks.at_start([Finding(OK, "kueue", "x")]) == [Finding(OK, "kueue", "x")]


def settings(jobs: bool = True, namespace: str = "jhub") -> checks.HubSettings:
    return checks.HubSettings(
        CATALOG,
        namespace,
        StorageSettings(),
        "aiinfn-notebook",
        checks.JobsSettings(namespace, "aiinfn-batch") if jobs else None,
    )


def test_the_permission_table_asks_each_permission_once_with_every_reason():
    table = checks.permission_table(settings())
    keys = [(p.verb, p.group, p.resource, p.subresource, p.name, p.cluster, ns) for p, ns in table]
    assert len(keys) == len(set(keys))
    [log] = [p for p, _ in table if p.subresource == "log"]
    assert "crashed server" in log.why and "job logs" in log.why and not log.optional
    [nodes] = [p for p, _ in table if p.resource == "nodes" and p.verb == "list"]
    assert not nodes.optional  # the inventory watch needs it even if the capacity check does not
    without_jobs = checks.permission_table(settings(jobs=False))
    assert not any(p.group == "batch" for p, _ in without_jobs)


def test_each_missing_permission_is_named_with_its_code_path():
    needed = Permission(
        "get", "pods", "spawner: a crashed server's last log lines", subresource="log"
    )
    optional = Permission(
        "list",
        "clusterqueues",
        "job service capacity check",
        group="kueue.x-k8s.io",
        cluster=True,
        optional=True,
    )
    findings = checks.permission_findings(
        [(needed, "jhub", False), (optional, "jhub", False), (PODS, "jhub", True)]
    )
    assert [f.line() for f in findings] == [
        "ERROR permission: the hub may not get pods/log in namespace jhub "
        "(needed by spawner: a crashed server's last log lines)",
        "WARNING permission: the hub may not list clusterqueues.kueue.x-k8s.io (cluster-wide) "
        "(needed by job service capacity check)",
    ]
    assert checks.permission_findings([(PODS, "jhub", True)]) == [
        Finding(OK, "permission", "the hub has all 1 permissions it needs")
    ]


def test_the_shipped_flavors_and_queues_match_the_catalog():
    flavors = {
        f["metadata"]["name"]: f["spec"].get("nodeLabels", {}) for f in shipped("ResourceFlavor")
    }
    assert checks.flavor_findings(CATALOG, flavors) == []
    queues = [q["metadata"]["name"] for q in shipped("LocalQueue")]
    assert checks.queue_findings(CATALOG, queues, "jhub") == []


def test_a_missing_or_mismatched_flavor_and_a_missing_queue_are_errors():
    flavors = {
        f["metadata"]["name"]: f["spec"].get("nodeLabels", {}) for f in shipped("ResourceFlavor")
    }
    del flavors["u50"]
    flavors["t4"] = {"nvidia.com/gpu.product": "Tesla-V100"}
    lines = [f.line() for f in checks.flavor_findings(CATALOG, flavors)]
    assert lines == [
        "ERROR kueue: ResourceFlavor 't4' selects nvidia.com/gpu.product=Tesla-V100, not the "
        "catalog's nvidia.com/gpu.product=Tesla-T4",
        "ERROR kueue: no ResourceFlavor 'u50' for the catalog accelerator 'u50': Kueue cannot "
        "admit its jobs (see helm-values/)",
    ]
    [finding] = checks.queue_findings(CATALOG, ["project-cms-2dml", "project-qml"], "jhub")
    assert finding.line() == (
        "ERROR kueue: project 'lhcb-flashsim' has no LocalQueue "
        "'project-lhcb-2dflashsim' in namespace jhub: its jobs are refused"
    )


def node(labels: dict, allocatable: dict) -> tuple[dict, dict]:
    return labels, allocatable


def test_an_accelerator_no_node_offers_is_a_warning_naming_it():
    nodes = [
        node({"nvidia.com/gpu.product": "Tesla-T4"}, {"nvidia.com/gpu": "8"}),
        # carries the labels but publishes none of the resource: offers nothing
        node({"nvidia.com/gpu.product": "NVIDIA-A30"}, {"nvidia.com/gpu": "0"}),
        node({"nvidia.com/mig.strategy": "mixed"}, {"nvidia.com/mig-1g.10gb": "2"}),
    ]
    warned = {f.message.split("'")[1] for f in checks.node_findings(CATALOG, nodes)}
    assert warned == set(CATALOG.accelerators) - {"cpu", "t4", "a100-mig-1g-10gb"}
    [a30] = [f for f in checks.node_findings(CATALOG, nodes) if "'a30'" in f.message]
    assert a30.line() == (
        "WARNING nodes: no node offers the catalog accelerator 'a30' "
        "(nvidia.com/gpu.product=NVIDIA-A30, nvidia.com/gpu): users see it but "
        "can never get one"
    )


def test_the_claims_checked_are_those_helm_values_ships():
    claims = {d["metadata"]["name"] for d in shipped("PersistentVolumeClaim")}
    expected = checks.expected_claims(settings())
    assert set(expected) <= claims
    assert expected["aiinfn-home"] == "AiInfnStorage.home_claim"
    assert expected["aiinfn-project-lhcb-2dflashsim"] == "project lhcb-flashsim"
    assert "aiinfn-juicefs" not in expected  # off by default


def test_a_missing_claim_is_an_error_and_an_unbound_one_a_warning():
    expected = {"aiinfn-home": "AiInfnStorage.home_claim", "aiinfn-project-qml": "project qml"}
    findings = checks.claim_findings(expected, {"aiinfn-home": "Pending"}, "jhub")
    assert [f.line() for f in findings] == [
        "WARNING storage: claim 'aiinfn-home' (AiInfnStorage.home_claim) is Pending, not Bound",
        "ERROR storage: claim 'aiinfn-project-qml' (project qml) does not exist in namespace jhub "
        "(see helm-values/)",
    ]


# -- the configuration ---------------------------------------------------------------------------


def write_config(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "jupyterhub_config.py"
    path.write_text("\n".join([f"load_subconfig({str(REPO / 'jupyterhub_config.py')!r})", *lines]))
    return path


def test_the_repository_config_runs_the_job_service_with_the_hub_account(tmp_path):
    config = checks.load_hub_config(str(write_config(tmp_path, "c.KubeSpawner.namespace = 'jhub'")))
    findings, found = checks.config_findings(config)
    assert [f.level for f in findings] == [OK]
    assert found.namespace == "jhub" and found.notebook_priority_class == "aiinfn-notebook"
    assert found.jobs == checks.JobsSettings("jhub", "aiinfn-batch")
    assert found.storage.home_claim == "aiinfn-home"


def test_a_config_without_the_job_service_checks_no_job_permissions(tmp_path):
    config = checks.load_hub_config(
        str(
            write_config(
                tmp_path, "c.JupyterHub.services = []", "c.AiInfnJobs.pod_priority_class = 'x'"
            )
        )
    )
    assert checks.config_findings(config)[1].jobs is None


def test_an_invalid_catalog_or_storage_setting_is_a_config_error(tmp_path):
    config = Config()
    config.AiInfnPlatform.catalog_file = str(tmp_path / "missing.yaml")
    [finding] = checks.config_findings(config)[0]
    assert finding.level == ERROR and finding.area == "config" and "missing.yaml" in finding.message
    config = Config()
    config.AiInfnStorage.gid_min = 100
    [finding] = checks.config_findings(config)[0]
    assert finding.line().startswith("ERROR config: AiInfnStorage.gid_min")


def run_command(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    checks.add_arguments(parser)
    return checks.run(parser.parse_args(argv))


def test_a_config_that_does_not_load_exits_2(tmp_path, capsys):
    assert run_command("--config", str(tmp_path / "none.py")) == 2
    broken = tmp_path / "broken.py"
    broken.write_text("c.KubeSpawner.namespace = undefined_name\n")
    assert run_command("--config", str(broken)) == 2
    assert "undefined_name" in capsys.readouterr().err


def test_unusable_credentials_are_an_error_after_the_config_findings(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    bad = tmp_path / "kubeconfig"
    bad.write_text("apiVersion: v1\nkind: Config\n")
    config = write_config(tmp_path, "c.KubeSpawner.namespace = 'jhub'")
    assert run_command("--config", str(config), "--kubeconfig", str(bad)) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("ok config: ")
    assert lines[1].startswith("ERROR cluster: cannot load the hub's Kubernetes credentials")
    assert len(lines) == 2


def test_without_the_cluster_part_only_the_configuration_is_checked():
    findings = asyncio.run(checks.run_checks(Config(), "/nonexistent", cluster=False))
    assert [f.area for f in findings] == ["config"]


def test_the_checks_configure_themselves_from_the_hub_config():
    config = Config()
    config.AiInfnChecks.cluster = False
    options = checks.AiInfnChecks(config=config)
    assert options.at_start and not options.cluster


def test_outside_a_starting_hub_the_config_file_sets_up_no_start_check():
    # This process is no JupyterHub (like the job service, or `aiinfn-hub check` itself).
    assert checks.starting_hub() is None
    checks.check_at_hub_start()


def test_the_priority_classes_checked_are_those_the_pods_name():
    assert checks.priority_classes(settings()) == {
        "aiinfn-notebook": "AiInfnPlatform.notebook_priority_class",
        "aiinfn-batch": "AiInfnJobs.pod_priority_class",
    }
    assert checks.priority_classes(settings(jobs=False)) == {
        "aiinfn-notebook": "AiInfnPlatform.notebook_priority_class"
    }
    classes = {d["metadata"]["name"] for d in shipped("PriorityClass")}
    assert set(checks.priority_classes(settings())) <= classes


@dataclass
class StartingHub:
    """What the start check uses of a JupyterHub: its final configuration and its log."""

    config: Config
    log: logging.Logger = logging.getLogger("tests.starting-hub")


def test_a_start_check_error_stops_the_hub_with_the_commands_lines(tmp_path):
    config = Config()
    config.AiInfnPlatform.catalog_file = str(tmp_path / "missing.yaml")
    [line] = [f.line() for f in asyncio.run(checks.run_checks(config, cluster=False))]
    with pytest.raises(SystemExit) as stopped:
        checks._start_checks(StartingHub(config))
    assert str(stopped.value).splitlines() == [
        "aiinfn-hub: refusing to start; `aiinfn-hub check` finds:",
        line,
    ]


def logged(caplog) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "tests.starting-hub"]


def test_start_checks_log_what_passes_and_can_be_turned_off(caplog):
    caplog.set_level(logging.INFO)
    config = Config()
    config.AiInfnChecks.cluster = False
    checks._start_checks(StartingHub(config))
    [(level, message)] = logged(caplog)
    assert level == "INFO" and message.startswith("aiinfn-hub check: ok config: ")
    caplog.clear()
    config.AiInfnChecks.at_start = False
    checks._start_checks(StartingHub(config))
    assert logged(caplog) == [("INFO", "aiinfn-hub: start checks off (AiInfnChecks.at_start)")]


def test_a_start_check_that_cannot_run_stops_the_hub_saying_how_to_skip_it(caplog):
    config = Config()
    config.AiInfnChecks.cluster = "not a bool"
    with pytest.raises(SystemExit, match="c.AiInfnChecks.at_start = False skips them"):
        checks._start_checks(StartingHub(config))
    assert [level for level, _ in logged(caplog)] == ["ERROR"]
