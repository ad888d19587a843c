"""`aiinfn-hub check`: the hub's configuration and the cluster it runs on, with the hub's own
credentials; and the same checks when the hub starts.

Findings are one line each (`ERROR area: ...`, `WARNING area: ...`, `ok area: ...`): the catalog,
policies and storage settings are valid; the hub's account may do everything the hub and its
managed job service need (one SelfSubjectAccessReview per permission of permissions.py, each
missing one named with the code path that needs it); the PriorityClasses exist; Kueue is
installed, has a ResourceFlavor for each catalog accelerator that selects its nodes and a
LocalQueue for each project; some node offers each accelerator; the storage claims exist.
The command exits 0 without errors, 1 with errors, 2 when the configuration cannot be loaded.

At hub start (set up by jupyterhub_config.py) a cluster still being set up must not stop the
hub, so only an invalid configuration, unusable credentials, a missing permission or a missing
PriorityClass are errors there, which stop the hub with the same lines; the rest is logged as
warnings. `c.AiInfnChecks.*` turns the start checks, or their cluster part, off.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from traitlets import Bool, TraitError
from traitlets.config import Config, Configurable
from traitlets.config.loader import LazyConfigValue, PyFileConfigLoader

from . import hubstate, k8s, permissions, volumes
from .catalog import Catalog, CatalogError
from .hubprocess import starting_hub
from .inventory_records import units
from .platform_config import AiInfnPlatform, notebook_namespace
from .policy import PolicyError
from .storage_config import AiInfnStorage, StorageSettings

ERROR, WARNING, OK = "ERROR", "WARNING", "ok"
# What stops a starting hub; Kueue, nodes and claims may still be on their way (warnings).
START_ERROR_AREAS = frozenset({"config", "cluster", "permission", "priority"})
CLUSTER_TIMEOUT_SECONDS = 60.0
JOBS_SERVICE_MODULE = "aiinfn_hub.services.jobs"
KUEUE_GROUP, KUEUE_VERSION = "kueue.x-k8s.io", "v1beta2"


class AiInfnChecks(Configurable):
    """The checks the hub runs when it starts (`aiinfn-hub check` always runs them all)."""

    at_start = Bool(
        True,
        config=True,
        help="""Check the configuration and the cluster when the hub starts; an error (invalid
        catalog or policy, unusable credentials, a missing permission or PriorityClass) stops
        the hub, anything else is logged as a warning.""",
    )
    cluster = Bool(
        True,
        config=True,
        help="""Include the cluster in the start checks (permissions, PriorityClasses, Kueue,
        nodes, storage claims). False: only the configuration is checked at start.""",
    )


@dataclass(frozen=True)
class Finding:
    level: str
    area: str
    message: str

    def line(self) -> str:
        return f"{self.level} {self.area}: {self.message}"


def at_start(findings: Iterable[Finding]) -> list[Finding]:
    """The findings as a starting hub weighs them: errors outside START_ERROR_AREAS are
    warnings."""
    return [
        Finding(WARNING, f.area, f.message)
        if f.level == ERROR and f.area not in START_ERROR_AREAS
        else f
        for f in findings
    ]


def exit_status(findings: Iterable[Finding]) -> int:
    return 1 if any(f.level == ERROR for f in findings) else 0


@dataclass(frozen=True)
class JobsSettings:
    namespace: str
    pod_priority_class: str


@dataclass(frozen=True)
class HubSettings:
    """What the checks need from the hub's configuration."""

    catalog: Catalog
    namespace: str
    storage: StorageSettings
    notebook_priority_class: str
    jobs: JobsSettings | None  # None: no job service runs with the hub's account


# -- the configuration -------------------------------------------------------------------------


class ConfigLoadError(Exception):
    """The hub configuration file is missing or fails to run."""


def load_hub_config(path: str) -> Config:
    """The hub's configuration file, loaded the way JupyterHub and the job service load it."""
    full = Path(path).resolve()
    if not full.is_file():
        raise ConfigLoadError(f"the hub configuration {path!r} does not exist (--config)")
    try:
        return PyFileConfigLoader(full.name, path=str(full.parent)).load_config()
    except (Exception, SystemExit) as error:
        raise ConfigLoadError(f"the hub configuration {path!r} does not load: {error}") from None


def _configured(config: Config, section: str, name: str) -> Any:
    value = config.get(section, {}).get(name)
    return value.get_value([]) if isinstance(value, LazyConfigValue) else value


def jobs_settings(config: Config) -> JobsSettings | None:
    """The job service's settings when JupyterHub runs it (a managed service, with the hub's
    account); None when it does not. Raises TraitError naming a bad AiInfnJobs key."""
    services = _configured(config, "JupyterHub", "services") or []
    if not any(
        isinstance(s, dict) and JOBS_SERVICE_MODULE in (s.get("command") or ()) for s in services
    ):
        return None
    from .services.jobs.app import AiInfnJobs

    jobs = AiInfnJobs(config=config)
    return JobsSettings(namespace=jobs.namespace, pod_priority_class=jobs.pod_priority_class)


def config_findings(config: Config) -> tuple[list[Finding], HubSettings | None]:
    """The catalog, policies and storage settings; the settings the cluster checks need."""
    try:
        platform_settings = AiInfnPlatform(config=config)
        platform = hubstate.load(platform_settings)
        storage = AiInfnStorage(config=config).settings()
        jobs = jobs_settings(config)
    except (CatalogError, PolicyError, TraitError) as error:
        return [Finding(ERROR, "config", str(error))], None
    settings = HubSettings(
        platform.catalog,
        notebook_namespace(config),
        storage,
        platform_settings.notebook_priority_class,
        jobs,
    )
    catalog = platform.catalog
    return [
        Finding(
            OK,
            "config",
            f"catalog ({len(catalog.accelerators)} accelerators, "
            f"{len(catalog.projects)} projects), policies and storage settings are "
            "valid",
        )
    ], settings


# -- pure judgements of what the cluster holds --------------------------------------------------


def _labels(labels: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "no labels"


def flavor_findings(catalog: Catalog, flavors: Mapping[str, Mapping[str, str]]) -> list[Finding]:
    """Each catalog accelerator has a ResourceFlavor of its key whose node labels include the
    catalog's (docs/queues.md); `flavors`: node labels by flavor name."""
    findings = []
    for key, accelerator in catalog.accelerators.items():
        if key not in flavors:
            findings.append(
                Finding(
                    ERROR,
                    "kueue",
                    f"no ResourceFlavor {key!r} for the catalog accelerator {key!r}: "
                    "Kueue cannot admit its jobs (see helm-values/)",
                )
            )
        elif not accelerator.node_labels.items() <= flavors[key].items():
            findings.append(
                Finding(
                    ERROR,
                    "kueue",
                    f"ResourceFlavor {key!r} selects {_labels(flavors[key])}, not "
                    f"the catalog's {_labels(accelerator.node_labels)}",
                )
            )
    return findings


def queue_findings(catalog: Catalog, queues: Iterable[str], namespace: str) -> list[Finding]:
    """Each catalog project has its LocalQueue in the job namespace."""
    from .services.jobs.plan import queue_name

    present = set(queues)
    return [
        Finding(
            ERROR,
            "kueue",
            f"project {key!r} has no LocalQueue {queue_name(key)!r} "
            f"in namespace {namespace}: its jobs are refused",
        )
        for key in catalog.projects
        if queue_name(key) not in present
    ]


def node_findings(
    catalog: Catalog, nodes: Sequence[tuple[Mapping[str, str], Mapping[str, Any]]]
) -> list[Finding]:
    """A warning for each accelerator no node offers: none carries its labels and publishes its
    resource (the inventory's rule); `nodes`: (labels, allocatable) of each node."""
    findings = []
    for key, accelerator in catalog.accelerators.items():
        if accelerator.resource is None:
            continue
        if not any(
            accelerator.offered_by(labels) and units(allocatable.get(accelerator.resource))
            for labels, allocatable in nodes
        ):
            findings.append(
                Finding(
                    WARNING,
                    "nodes",
                    f"no node offers the catalog accelerator {key!r} "
                    f"({_labels(accelerator.node_labels)}, {accelerator.resource}): users see it "
                    "but can never get one",
                )
            )
    return findings


def expected_claims(settings: HubSettings) -> dict[str, str]:
    """The claims the pods mount, each with the setting or project that names it."""
    storage = settings.storage
    names = ("home_claim", "public_claim", "envs_claim", "cvmfs_claim", "juicefs_claim")
    claims = {
        getattr(storage, name): f"AiInfnStorage.{name}" for name in names if getattr(storage, name)
    }
    for project in settings.catalog.projects:
        claims[volumes.project_claim(storage, project)] = f"project {project}"
    return claims


def claim_findings(
    expected: Mapping[str, str], phases: Mapping[str, str], namespace: str
) -> list[Finding]:
    """Missing claims are errors (pods that mount them never start), unbound ones warnings."""
    findings = []
    for name, what in expected.items():
        if name not in phases:
            findings.append(
                Finding(
                    ERROR,
                    "storage",
                    f"claim {name!r} ({what}) does not exist "
                    f"in namespace {namespace} (see helm-values/)",
                )
            )
        elif phases[name] != "Bound":
            findings.append(
                Finding(
                    WARNING,
                    "storage",
                    f"claim {name!r} ({what}) is {phases[name] or 'in no phase'}, not Bound",
                )
            )
    return findings


def permission_table(settings: HubSettings) -> list[tuple[permissions.Permission, str]]:
    """(permission, namespace) the hub's account needs, each once; a permission both the hub and
    the job service need keeps both reasons and is optional only if both are."""
    hub = permissions.hub_permissions(settings.storage.identity_configmap)
    wanted = [(p, settings.namespace) for p in hub]
    if settings.jobs is not None:
        wanted += [(p, settings.jobs.namespace) for p in permissions.jobs_permissions()]
    merged: dict[tuple, tuple[permissions.Permission, str]] = {}
    for permission, namespace in wanted:
        key = (
            permission.verb,
            permission.group,
            permission.resource,
            permission.subresource,
            permission.name,
            permission.cluster,
            "" if permission.cluster else namespace,
        )
        if key in merged:
            first = merged[key][0]
            permission = dataclasses.replace(
                first,
                why=f"{first.why}; {permission.why}",
                optional=first.optional and permission.optional,
            )
        merged[key] = (permission, namespace)
    return list(merged.values())


def permission_findings(
    answers: Sequence[tuple[permissions.Permission, str, bool]],
) -> list[Finding]:
    """(permission, namespace, allowed) -> one finding per missing permission, else one ok."""
    findings = [
        Finding(
            WARNING if p.optional else ERROR,
            "permission",
            f"the hub may not {p.describe(namespace)} (needed by {p.why})",
        )
        for p, namespace, allowed in answers
        if not allowed
    ]
    return findings or [
        Finding(OK, "permission", f"the hub has all {len(answers)} permissions it needs")
    ]


# -- the cluster, read with the hub's credentials ----------------------------------------------


class _NotChecked(Exception):
    """A read the hub's account may not make: the permission finding names it already."""


async def _read(what: str, pending: Awaitable) -> Any:
    try:
        return await pending
    except ApiException as error:
        if error.status == 403:
            raise _NotChecked(what) from None
        raise


async def _allowed(
    authz: client.AuthorizationV1Api, permission: permissions.Permission, namespace: str
) -> bool:
    attributes = client.V1ResourceAttributes(
        verb=permission.verb,
        group=permission.group,
        resource=permission.resource,
        subresource=permission.subresource or None,
        name=permission.name or None,
        namespace=None if permission.cluster else namespace,
    )
    review = await authz.create_self_subject_access_review(
        client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=attributes)
        ),
        field_validation=k8s.STRICT,
    )
    return bool(review.status.allowed)


async def check_permissions(api: client.ApiClient, settings: HubSettings) -> list[Finding]:
    authz = client.AuthorizationV1Api(api)
    table = permission_table(settings)
    allowed = await asyncio.gather(*(_allowed(authz, p, namespace) for p, namespace in table))
    return permission_findings(
        [(p, namespace, ok) for (p, namespace), ok in zip(table, allowed, strict=True)]
    )


def priority_classes(settings: HubSettings) -> dict[str, str]:
    """The PriorityClasses pods name, each with the setting that names it."""
    wanted = {settings.notebook_priority_class: "AiInfnPlatform.notebook_priority_class"}
    if settings.jobs is not None:
        wanted.setdefault(settings.jobs.pod_priority_class, "AiInfnJobs.pod_priority_class")
    return {name: key for name, key in wanted.items() if name}


async def check_priority_classes(api: client.ApiClient, settings: HubSettings) -> list[Finding]:
    scheduling = client.SchedulingV1Api(api)
    wanted = priority_classes(settings)
    findings = []
    for name, key in wanted.items():
        try:
            await _read("get priorityclasses", scheduling.read_priority_class(name))
        except ApiException as error:
            if error.status != 404:
                raise
            findings.append(
                Finding(
                    ERROR,
                    "priority",
                    f"PriorityClass {name!r} ({key}) does not "
                    "exist: its pods are refused "
                    "(helm-values/priority-classes.yaml)",
                )
            )
    return findings or [
        Finding(
            OK,
            "priority",
            f"the PriorityClasses pods name exist: {', '.join(wanted) or 'none named'}",
        )
    ]


async def check_kueue(api: client.ApiClient, settings: HubSettings) -> list[Finding]:
    jobs = settings.jobs
    assert jobs is not None  # checked only when the job service runs
    custom = client.CustomObjectsApi(api)
    try:
        await custom.get_api_resources(KUEUE_GROUP, KUEUE_VERSION)
    except ApiException as error:
        if error.status != 404:
            raise
        return [
            Finding(
                ERROR,
                "kueue",
                f"Kueue is not installed (no {KUEUE_GROUP}/"
                f"{KUEUE_VERSION} API): the job service cannot queue jobs",
            )
        ]
    flavors = await _read(
        "list resourceflavors",
        custom.list_cluster_custom_object(KUEUE_GROUP, KUEUE_VERSION, "resourceflavors"),
    )
    queues = await _read(
        "list localqueues",
        custom.list_namespaced_custom_object(
            KUEUE_GROUP, KUEUE_VERSION, jobs.namespace, "localqueues"
        ),
    )
    findings = flavor_findings(
        settings.catalog,
        {
            f["metadata"]["name"]: (f.get("spec") or {}).get("nodeLabels") or {}
            for f in flavors["items"]
        },
    )
    findings += queue_findings(
        settings.catalog, (q["metadata"]["name"] for q in queues["items"]), jobs.namespace
    )
    return findings or [
        Finding(
            OK,
            "kueue",
            "installed, with a flavor for every accelerator and a queue for every project",
        )
    ]


async def check_nodes(api: client.ApiClient, settings: HubSettings) -> list[Finding]:
    nodes = await _read("list nodes", client.CoreV1Api(api).list_node())
    findings = node_findings(
        settings.catalog,
        [(n.metadata.labels or {}, (n.status and n.status.allocatable) or {}) for n in nodes.items],
    )
    return findings or [
        Finding(
            OK,
            "nodes",
            f"every catalog accelerator is offered by some of the {len(nodes.items)} nodes",
        )
    ]


async def check_claims(api: client.ApiClient, settings: HubSettings) -> list[Finding]:
    core = client.CoreV1Api(api)
    claims = await _read(
        "list persistentvolumeclaims",
        core.list_namespaced_persistent_volume_claim(settings.namespace),
    )
    expected = expected_claims(settings)
    phases = {c.metadata.name: (c.status and c.status.phase) or "" for c in claims.items}
    findings = claim_findings(expected, phases, settings.namespace)
    return findings or [
        Finding(OK, "storage", f"the {len(expected)} storage claims exist and are bound")
    ]


async def cluster_findings(api: client.ApiClient, settings: HubSettings) -> list[Finding]:
    """Every cluster check in turn; one the account may not read is skipped with a warning."""
    checks: list[tuple[str, Any]] = [
        ("permission", check_permissions),
        ("priority", check_priority_classes),
    ]
    if settings.jobs is not None:
        checks.append(("kueue", check_kueue))
    checks += [("nodes", check_nodes), ("storage", check_claims)]
    findings: list[Finding] = []
    for area, check in checks:
        try:
            findings += await check(api, settings)
        except _NotChecked as missing:
            findings.append(Finding(WARNING, area, f"not checked: the hub may not {missing}"))
        except ApiException as error:
            findings.append(
                Finding(
                    ERROR,
                    area,
                    f"could not check: the API server answered {error.status} {error.reason}",
                )
            )
    return findings


async def run_checks(
    config: Config, kubeconfig: str | None = None, cluster: bool = True
) -> list[Finding]:
    """The configuration, then (with `cluster`) the cluster through the hub's credentials:
    `kubeconfig`, else $KUBECONFIG, else the pod's service account."""
    findings, settings = config_findings(config)
    if settings is None or not cluster:
        return findings
    try:
        api = await k8s.api_client(kubeconfig)
    except Exception as error:  # kubeconfig or in-cluster loading: many error types, one meaning
        return findings + [
            Finding(
                ERROR,
                "cluster",
                "cannot load the hub's Kubernetes "
                "credentials (kubeconfig, $KUBECONFIG or the pod's service "
                f"account): {error}",
            )
        ]
    async with api:
        try:
            findings += await asyncio.wait_for(
                cluster_findings(api, settings), CLUSTER_TIMEOUT_SECONDS
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            findings.append(
                Finding(
                    ERROR,
                    "cluster",
                    f"cannot reach the Kubernetes API at {api.configuration.host}: {error!r}",
                )
            )
    return findings


# -- `aiinfn-hub check` ------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .services.base import HUB_CONFIG_ENV

    parser.add_argument(
        "--config",
        default=os.environ.get(HUB_CONFIG_ENV) or "jupyterhub_config.py",
        help=f"the hub's configuration file (default: ${HUB_CONFIG_ENV}, else "
        "./jupyterhub_config.py)",
    )
    parser.add_argument(
        "--kubeconfig",
        help="the hub's Kubernetes credentials (default: $KUBECONFIG, else the "
        "pod's service account)",
    )


def run(args: argparse.Namespace) -> int:
    """Print one line per finding; 0 without errors, 1 with errors, 2 if the configuration
    does not load."""
    try:
        config = load_hub_config(args.config)
    except ConfigLoadError as error:
        print(f"aiinfn-hub check: {error}", file=sys.stderr)
        return 2
    findings = asyncio.run(run_checks(config, args.kubeconfig))
    for finding in findings:
        print(finding.line())
    return exit_status(findings)


# -- at hub start ------------------------------------------------------------------------------


def check_at_hub_start() -> None:
    """From the hub's configuration file: run the checks once the whole configuration is loaded.

    JupyterHub runs the file inside its start-up coroutine, before the files that include it
    have finished; a callback on its event loop runs once the start-up first waits, with the
    final configuration and before the proxy starts (JupyterHub 5.5 and 6.x)."""
    hub = starting_hub()
    if hub is not None:
        asyncio.get_running_loop().call_soon(_start_checks, hub)


def _start_checks(hub: Any) -> None:
    """Run the checks for the starting hub: warnings logged, errors stop it (SystemExit, since
    any other exception in a loop callback would only be logged and the hub would go on)."""
    try:
        options = AiInfnChecks(config=hub.config)
        if not options.at_start:
            hub.log.info("aiinfn-hub: start checks off (AiInfnChecks.at_start)")
            return
        # The hub's loop is busy running this callback: the checks get a thread and a loop of
        # their own, and the hub waits for them (nothing should happen before they pass).
        pending = run_checks(hub.config, cluster=options.cluster)
        with ThreadPoolExecutor(1, thread_name_prefix="aiinfn-checks") as pool:
            findings = at_start(pool.submit(asyncio.run, pending).result())
    except Exception as error:
        hub.log.exception("aiinfn-hub: the start checks failed")
        raise SystemExit(
            f"aiinfn-hub: the start checks failed ({error}); "
            "c.AiInfnChecks.at_start = False skips them"
        ) from None
    for finding in findings:
        if finding.level != ERROR:
            log = hub.log.warning if finding.level == WARNING else hub.log.info
            log("aiinfn-hub check: %s", finding.line())
    errors = [f.line() for f in findings if f.level == ERROR]
    if errors:
        raise SystemExit(
            "aiinfn-hub: refusing to start; `aiinfn-hub check` finds:\n" + "\n".join(errors)
        )
