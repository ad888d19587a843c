"""A validated request + who asks + the platform rules -> a JobPlan, or a refusal with the
reason. Pure.

Catalog keys must exist (400), the caller's groups must allow them (403), the project must be
one of the caller's own (403), sizes must stay within the policy's caps (403). Offloadable jobs
may only ask for volumes a remote site can mount (400, naming the volume and why); they are
offered to the remote sites whose policy accepts them (a job that must run remotely and that no
site accepts: 400, naming each site's rule). What a job carries counts too: the JuiceFS mount
credentials go only to sites that allow them, a project's admin-managed secrets only to sites
that take project secrets.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from ... import names, tokens
from ...admin_files import quantity
from ...catalog import Accelerator, Catalog
from ...environments import layout
from ...errors import UserError
from ...policy import UserPolicy
from ...profiles import check_custom_image
from ..base import HubUser
from .request import SCRIPT_KEY, VOLUME_KINDS, AnyRequest, CloneRequest, JobRequest

BATCH_DEFAULT_VOLUMES = ("home", "projects", "juicefs")
MIN_MEMORY_BYTES = 2**20


@dataclass(frozen=True)
class SitePolicy:
    """What one remote site accepts (c.AiInfnJobs.sites): `name` is its
    virtual-node.interlink/site label, `flavor` its Kueue ResourceFlavor."""

    name: str
    flavor: str
    accelerator_kinds: frozenset[str]
    max_runtime_seconds: int | None = None
    juicefs_credentials: bool = False
    project_secrets: bool = False


@dataclass(frozen=True)
class Cargo:
    """What a job ships besides its command, which a site's policy must allow: the JuiceFS
    mount credentials (when `juicefs`) and its project's secrets (their names)."""

    juicefs: bool = False
    secrets: tuple[str, ...] = ()


_KIND_NAMES = {"cpu": "CPU-only job", "gpu": "GPU", "mig": "MIG slice", "fpga": "FPGA"}


def _hours(seconds: int) -> str:
    return f"{seconds / 3600:g} h"


def site_refusal(
    site: SitePolicy, kind: str, deadline_seconds: int | None, cargo: Cargo = Cargo()
) -> str | None:
    """The site's rule that rules this job out, or None when the site accepts it. A job without
    a deadline may run for ever, which only a site without a maximum run time accepts."""
    if kind not in site.accelerator_kinds:
        return f"accepts no {_KIND_NAMES.get(kind, kind)}"
    limit = site.max_runtime_seconds
    if limit is not None and (deadline_seconds is None or deadline_seconds > limit):
        return f"maximum run time {_hours(limit)} (give a deadline_seconds of at most {limit})"
    if cargo.juicefs and not site.juicefs_credentials:
        return "receives no JuiceFS credentials (ask for no juicefs volume)"
    if cargo.secrets and not site.project_secrets:
        return f"receives no project secrets (this project's jobs get {', '.join(cargo.secrets)})"
    return None


_SITE_FIELDS = {
    "flavor",
    "accepts_accelerator_kinds",
    "max_runtime_seconds",
    "juicefs_credentials",
    "project_secrets",
}
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


def site_policies(config: Mapping[str, Any], kinds: Collection[str]) -> tuple[SitePolicy, ...]:
    """c.AiInfnJobs.sites as SitePolicy objects, in order; ValueError saying what is wrong."""
    sites = []
    for name, entry in config.items():
        where = f"site {name!r}"
        if not isinstance(name, str) or not _LABEL_VALUE.match(name):
            raise ValueError(f"{where}: the name must be the node's site label value")
        if not isinstance(entry, Mapping) or set(entry) - _SITE_FIELDS or "flavor" not in entry:
            raise ValueError(f"{where}: give a mapping with flavor and of {sorted(_SITE_FIELDS)}")
        accepted = entry.get("accepts_accelerator_kinds", ["cpu"])
        if isinstance(accepted, str) or not set(accepted) <= set(kinds):
            raise ValueError(f"{where}: accepts_accelerator_kinds must be a list of {list(kinds)}")
        limit = entry.get("max_runtime_seconds")
        if limit is not None and (type(limit) is not int or limit < 60):
            raise ValueError(f"{where}: max_runtime_seconds must be whole seconds, at least 60")
        juicefs = entry.get("juicefs_credentials", False)
        secrets = entry.get("project_secrets", False)
        if not isinstance(entry["flavor"], str) or not isinstance(juicefs, bool):
            raise ValueError(f"{where}: flavor must be a name, juicefs_credentials true or false")
        if not isinstance(secrets, bool):
            raise ValueError(f"{where}: project_secrets must be true or false")
        sites.append(
            SitePolicy(name, entry["flavor"], frozenset(accepted), limit, juicefs, secrets)
        )
    return tuple(sites)


SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


# The platform's own Secrets, never a project's: the users' tokens and z2jh's hub Secret (which
# holds the hub's configuration, its OAuth client secret included).
PLATFORM_SECRET_PREFIXES = (f"{tokens.SECRET_PREFIX}-",)
PLATFORM_SECRETS = frozenset({"hub"})


def project_secrets(
    config: Mapping[str, Any], projects: Collection[str]
) -> dict[str, tuple[str, ...]]:
    """c.AiInfnJobs.project_secrets checked: catalog projects to lists of Secret names (DNS
    labels, none of the platform's own Secrets); ValueError saying what is wrong."""
    checked = {}
    for project, secret_names in config.items():
        where = f"project {project!r}"
        if project not in projects:
            raise ValueError(f"{where} is not in the catalog (projects: {', '.join(projects)})")
        if isinstance(secret_names, str) or not isinstance(secret_names, Collection):
            raise ValueError(f"{where}: give a list of Secret names")
        for name in secret_names:
            if not isinstance(name, str) or not SECRET_NAME.match(name):
                raise ValueError(f"{where}: {name!r} is not a Secret name (a DNS label)")
            if name in PLATFORM_SECRETS or name.startswith(PLATFORM_SECRET_PREFIXES):
                raise ValueError(f"{where}: {name!r} is one of the platform's own Secrets")
        if len(set(secret_names)) != len(secret_names):
            raise ValueError(f"{where}: a Secret is listed twice")
        checked[project] = tuple(secret_names)
    return checked


@dataclass(frozen=True)
class JobRules:
    """The service's settings that shape every job (the AiInfnJobs traits, gathered)."""

    priorities: Mapping[str, str]
    default_priority: str
    default_ttl_seconds: int
    sandbox_path: str
    storage_kinds: tuple[str, ...]
    remote_volume_kinds: frozenset[str]
    offload_accelerator_kinds: frozenset[str]
    max_unfinished_jobs: int = 100
    max_retries: int = 3  # the service's backoff_limit: each job's default and most
    capacity_refresh_seconds: float = 60.0
    sites: tuple[SitePolicy, ...] = ()
    juicefs_credentials_secret: str | None = None  # shipped to sites that allow it
    project_secrets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class NotebookFacts:
    """What a clone inherits from the caller's running notebook pod by default."""

    accelerator: str
    count: int
    cpu: str
    memory: str
    volume_kinds: tuple[str, ...]


@dataclass(frozen=True)
class JobPlan:
    """Everything the manifest builders need, decided and checked; nothing the user did not pick."""

    kind: str
    display_name: str
    owner: str
    project: str
    queue: str
    priority: str
    priority_class: str
    accelerator: Accelerator
    count: int
    cpu: str
    memory: str
    image: str | None
    command: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    working_dir: str | None
    completions: int
    parallelism: int
    deadline_seconds: int | None
    ttl_seconds: int
    retries: int
    offload: str  # never, may (local flavors first, then remote sites) or only (remote)
    volume_kinds: tuple[str, ...]
    sandbox: Mapping[str, str] = field(default_factory=dict)
    sites: tuple[str, ...] = ()  # the remote sites that accept the job, in the flavors' order
    secrets: tuple[str, ...] = ()  # the project's admin-managed Secrets, mounted by name
    juicefs_credentials: str | None = None  # the JuiceFS credentials Secret, for remote sites
    software: str | None = None  # envs/NAME or ~/envs/NAME, activated around the command

    @property
    def resources(self) -> dict[str, str]:
        """Requests (and equal limits) of the job container."""
        resources = {"cpu": self.cpu, "memory": self.memory}
        if self.accelerator.resource and self.count:
            resources[self.accelerator.resource] = str(self.count)
        return resources


def queue_name(project: str) -> str:
    """The project's Kueue LocalQueue in the user namespace."""
    return names.object_name("project", project)


def _project(request: AnyRequest, caller: HubUser, catalog: Catalog) -> str:
    mine = [p.key for p in catalog.projects_of(caller.groups)]
    if request.project is not None:
        if request.project not in mine:
            raise UserError(
                f"you are not a member of a project called {request.project!r}"
                f"{'; yours: ' + ', '.join(mine) if mine else ''}",
                reason="project",
                status=403,
            )
        return request.project
    if len(mine) == 1:
        return mine[0]
    if not mine:
        raise UserError(
            "batch jobs run in a project's queue, and you are in no project",
            reason="project",
            status=403,
        )
    raise UserError(f"choose a project for this job: {', '.join(mine)}", reason="project")


def _accelerator(
    request: AnyRequest, catalog: Catalog, policy: UserPolicy, default: str, default_count: int
) -> tuple[Accelerator, int]:
    key = request.accelerator or default
    accelerator = catalog.accelerators.get(key)
    if accelerator is None:
        raise UserError(
            f"unknown accelerator {key!r}; choose one of {', '.join(catalog.accelerators)}"
        )
    if not policy.rules.allows_accelerator(key):
        raise UserError(
            f"{accelerator.display_name} is not available to your groups",
            reason="policy",
            status=403,
        )
    if accelerator.kind == "cpu":
        if request.count:
            raise UserError("count must be 0 or absent for CPU-only jobs")
        return accelerator, 0
    count = (
        request.count
        if request.count is not None
        else (default_count if request.accelerator is None else min(accelerator.counts))
    )
    if count not in accelerator.counts:
        raise UserError(
            f"count for {accelerator.display_name} must be one of "
            f"{', '.join(map(str, accelerator.counts))}"
        )
    if count > policy.rules.max_accelerators:
        limit = policy.rules.max_accelerators
        raise UserError(
            f"over your limit of {limit} accelerator{'s' if limit != 1 else ''} per job pod",
            reason="policy",
            status=403,
        )
    return accelerator, count


def _size(request: AnyRequest, policy: UserPolicy, cpu: str, memory: str) -> tuple[str, str]:
    cpu, memory = request.cpu or cpu, request.memory or memory
    if quantity(cpu) <= 0:
        raise UserError("cpu must be more than 0")
    if quantity(memory) < MIN_MEMORY_BYTES:
        raise UserError("memory must be at least 1Mi")
    if quantity(cpu) > policy.rules.max_cpu or quantity(memory) > policy.rules.max_memory:
        raise UserError(
            f"over your CPU or memory limit ({cpu} CPU, {memory} asked)",
            reason="policy",
            status=403,
        )
    return cpu, memory


def _environment(
    key: str | None, catalog: Catalog, policy: UserPolicy, accelerator: Accelerator
) -> str:
    """The catalog environment `key` names, or the first that fits."""
    if key is None:
        fitting = [
            e
            for e in catalog.environments_for(accelerator.kind)
            if policy.rules.allows_environment(e.key)
        ]
        if not fitting:
            raise UserError(
                f"no environment available to your groups supports {accelerator.display_name}",
                reason="policy",
                status=403,
            )
        return fitting[0].key
    environment = catalog.environments.get(key)
    if environment is None:
        raise UserError(
            f"unknown environment {key!r}; choose one of {', '.join(catalog.environments)}"
        )
    if not policy.rules.allows_environment(environment.key):
        raise UserError(
            f"environment {environment.key!r} is not available to your groups",
            reason="policy",
            status=403,
        )
    if accelerator.kind not in environment.kinds:
        raise UserError(
            f"environment {environment.key!r} does not support {accelerator.display_name}"
        )
    return environment.key


def _batch_image(
    request: JobRequest, catalog: Catalog, policy: UserPolicy, accelerator: Accelerator
) -> str:
    """The custom image, if allowed; else the catalog environment's image (a software
    environment runs in the default one)."""
    if request.image is not None:
        check_custom_image(catalog, policy, accelerator, request.image)
        return request.image
    key = None if software(request) else request.environment
    return catalog.environments[_environment(key, catalog, policy, accelerator)].image


def _ttl(request: AnyRequest, rules: JobRules) -> int:
    """Seconds the finished job is kept: what it asks for, else the service's default."""
    return rules.default_ttl_seconds if request.ttl_seconds is None else request.ttl_seconds


def _retries(request: AnyRequest, rules: JobRules) -> int:
    """The job's backoffLimit: what it asks for, up to the service's backoff_limit."""
    if request.retries is None:
        return rules.max_retries
    if request.retries > rules.max_retries:
        raise UserError(f"retries: at most {rules.max_retries} on this platform", reason="invalid")
    return request.retries


def software(request: AnyRequest) -> str | None:
    """The software environment (envs/NAME or ~/envs/NAME) the job asks for, if any (a batch
    job's `environment` may instead be a catalog key)."""
    asked = request.environment
    return asked if asked is not None and layout.parse_reference(asked) else None


def _check_software(reference: str | None, offload: str, volume_kinds: Collection[str]) -> None:
    """A software environment lives on local storage: the job stays local, and one in the
    user's home needs the home mounted. Whether it exists is checked where it is mounted."""
    if reference is None:
        return
    if offload != "never":
        raise UserError(
            f"a job in {reference} runs on local nodes (remote sites do not mount it): give "
            "offload 'never'",
            reason="offload",
        )
    if reference.startswith(layout.HOME_PREFIX) and "home" not in volume_kinds:
        raise UserError(f"{reference} is in your home: add 'home' to the volumes")


def _volume_kinds(
    request: AnyRequest, rules: JobRules, available: Collection[str], defaults: Collection[str]
) -> tuple[str, ...]:
    """The volume kinds to mount: asked for (each available), or the defaults that fit. A job
    that may run remotely gets none by default: JuiceFS, the one a site can mount, narrows the
    sites it may run at, so it is mounted only when asked for."""
    if request.volumes is None:
        if request.offload_mode != "never":
            return ()
        return tuple(k for k in VOLUME_KINDS if k in defaults and k in available)
    missing = [k for k in request.volumes if k not in available]
    if missing:
        raise UserError(
            f"volume(s) not available to this job: {', '.join(missing)}", reason="volumes"
        )
    if request.offload_mode != "never":
        local = [k for k in request.volumes if k not in rules.remote_volume_kinds]
        if local:
            remote = ", ".join(sorted(rules.remote_volume_kinds)) or "none"
            raise UserError(
                "an offloadable job may run at a remote site, which cannot mount "
                f"{', '.join(local)} (local storage such as NFS); remote sites mount: {remote} "
                "and the job's sandbox files",
                reason="offload",
            )
    return tuple(k for k in VOLUME_KINDS if k in request.volumes)


def _priority(request: AnyRequest, rules: JobRules) -> str:
    """The asked priority (or the service's default), one of the configured names."""
    priority = request.priority or rules.default_priority
    if priority not in rules.priorities:
        raise UserError(
            f"unknown priority {priority!r}; choose one of {', '.join(rules.priorities)}"
        )
    return priority


def _check_offload(request: AnyRequest, accelerator: Accelerator, rules: JobRules) -> None:
    """An offloadable job may only ask for an accelerator that remote sites offer."""
    if request.offload_mode != "never" and accelerator.kind not in rules.offload_accelerator_kinds:
        raise UserError(
            f"remote sites offer no {accelerator.display_name}; offloadable jobs may use: "
            f"{', '.join(sorted(rules.offload_accelerator_kinds))}",
            reason="offload",
        )


def _sites(request: AnyRequest, kind: str, rules: JobRules, cargo: Cargo) -> tuple[str, ...]:
    """The sites whose policy accepts the job: none for a local job; a job that must run
    remotely needs one (else 400, naming each site's rule), one that may do so stays local."""
    if request.confidential and request.offload_mode == "only":
        raise UserError(
            "a confidential job stays on local nodes: give offload 'never' (or 'may', which a "
            "confidential job ignores)",
            reason="offload",
        )
    if request.offload_mode == "never":
        return ()
    if cargo.juicefs and not rules.juicefs_credentials_secret:
        raise UserError(
            "no remote site can mount JuiceFS: this platform ships no JuiceFS credentials "
            "to remote sites; ask for no juicefs volume",
            reason="offload",
        )
    refusals = {s.name: site_refusal(s, kind, request.deadline_seconds, cargo) for s in rules.sites}
    accepted = tuple(name for name, refusal in refusals.items() if refusal is None)
    if not accepted and request.offload_mode == "only":
        reasons = "; ".join(f"{name}: {refusal}" for name, refusal in refusals.items())
        raise UserError(
            f"no remote site accepts this job: {reasons or 'no site is configured'}",
            reason="offload",
        )
    return accepted


@dataclass(frozen=True)
class _Data:
    """What a job mounts and where it may go for it."""

    volume_kinds: tuple[str, ...]
    sites: tuple[str, ...]
    secrets: tuple[str, ...]
    juicefs_credentials: str | None


def _data(
    request: AnyRequest,
    rules: JobRules,
    project: str,
    kind: str,
    volume_kinds: tuple[Collection[str], Collection[str]],
) -> _Data:
    """Volumes, sites and Secrets: local pods mount the JuiceFS claim; a job that runs at a
    remote site carries the JuiceFS credentials for the site's own mount instead, and only to
    sites that allow them. A pod template holds one of the two and Kueue picks the flavor after
    it is written, so a job that may run at either place cannot have JuiceFS.
    `volume_kinds`: those available to the job, and its defaults."""
    kinds = _volume_kinds(request, rules, *volume_kinds)
    if "juicefs" in kinds and request.offload_mode == "may":
        raise UserError(
            "a job that may run here or at a remote site cannot mount JuiceFS: here it is the "
            "cluster's volume, at a site the site's own mount, and a job carries only one; give "
            "offload 'only' (a remote site mounts it) or 'never' (mounted here)",
            reason="offload",
        )
    remote_juicefs = "juicefs" in kinds and request.offload_mode == "only"
    cargo = Cargo(juicefs=remote_juicefs, secrets=rules.project_secrets.get(project, ()))
    sites = _sites(request, kind, rules, cargo)
    if remote_juicefs:
        kinds = tuple(k for k in kinds if k != "juicefs")
    shipped = rules.juicefs_credentials_secret if remote_juicefs else None
    _check_software(software(request), request.offload_mode, kinds)
    return _Data(kinds, sites, cargo.secrets, shipped)


def _command(request: AnyRequest, rules: JobRules) -> tuple[str, ...]:
    """The container's command: the request's, or its script, run from the mounted sandbox."""
    if request.command is not None:  # a valid request has a command or a script, not both
        return tuple(request.command)
    return (f"{rules.sandbox_path}/{SCRIPT_KEY}",)


def resolve(
    request: AnyRequest,
    caller: HubUser,
    catalog: Catalog,
    policy: UserPolicy,
    rules: JobRules,
    notebook: NotebookFacts | None = None,
) -> JobPlan:
    """The JobPlan for this request, or a UserError saying what is not allowed and why.
    `notebook` is required for clones: their defaults (accelerator, size, volumes) are the
    notebook's, and what they may change is checked like any job."""
    if isinstance(request, CloneRequest) != (notebook is not None):
        raise ValueError("a clone needs the notebook's facts, a batch job must not have them")
    project = _project(request, caller, catalog)
    priority = _priority(request, rules)
    if notebook is not None:
        accelerator, count = _accelerator(
            request, catalog, policy, notebook.accelerator, notebook.count
        )
        cpu, memory = _size(request, policy, notebook.cpu, notebook.memory)
        available = defaults = notebook.volume_kinds
        image = None
    else:
        accelerator, count = _accelerator(request, catalog, policy, "cpu", 0)
        size = catalog.sizes_for(accelerator.kind)[catalog.default_sizes[accelerator.kind]]
        cpu, memory = _size(request, policy, size.cpu, size.memory)
        available, defaults = rules.storage_kinds, BATCH_DEFAULT_VOLUMES
        image = _batch_image(cast(JobRequest, request), catalog, policy, accelerator)
    _check_offload(request, accelerator, rules)
    data = _data(request, rules, project, accelerator.kind, (available, defaults))
    return JobPlan(
        kind=request.kind,
        display_name=request.name,
        owner=caller.name,
        project=project,
        queue=queue_name(project),
        priority=priority,
        priority_class=rules.priorities[priority],
        accelerator=accelerator,
        count=count,
        cpu=cpu,
        memory=memory,
        image=image,
        command=_command(request, rules),
        env=tuple(sorted(request.env.items())),
        working_dir=request.working_dir or (rules.sandbox_path if request.files else None),
        completions=request.completions,
        parallelism=request.parallelism or min(request.completions, 100),
        deadline_seconds=request.deadline_seconds,
        ttl_seconds=_ttl(request, rules),
        retries=_retries(request, rules),
        offload=request.offload_mode,
        volume_kinds=data.volume_kinds,
        sandbox=request.sandbox(),
        sites=data.sites,
        secrets=data.secrets,
        juicefs_credentials=data.juicefs_credentials,
        software=software(request),
    )
