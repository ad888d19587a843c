"""AiInfnJobs: the job service process (`python -m aiinfn_hub.services.jobs`).

It reads the hub's configuration file (docs/design.md says why): the catalog, the policies and
the placement settings are `c.AiInfnPlatform.*`, the namespace is the notebooks'
(`c.KubeSpawner.namespace`), the storage settings are `c.AiInfnStorage.*`, and its own are
`c.AiInfnJobs.*`. It talks to Kubernetes with its own credentials ($KUBECONFIG or the in-cluster
service account), never a user's; the RBAC it needs is in helm-values/jobs-service-rbac.yaml.
"""

from __future__ import annotations

import re
from typing import Any

from tornado.ioloop import PeriodicCallback
from traitlets import Dict, Float, Int, List, TraitError, Unicode, default, validate

from ... import hubstate, k8s, volumes
from ...accounting import quota_gate
from ...catalog import ACCELERATOR_KINDS, CatalogError
from ...identity import IdentityStore
from ...platform_config import AiInfnPlatform, notebook_namespace
from ...policy import PolicyError
from ...storage_config import AiInfnStorage
from ..base import ServiceApp
from ..cluster import HealthCheck, list_one_job
from ..ratelimit import RateLimiter
from . import handlers, openapi
from .manifests import BuildSettings
from .operations import JobService, Platform
from .plan import SECRET_NAME, JobRules, project_secrets, site_policies
from .request import MAX_TTL_SECONDS, VOLUME_KINDS
from .store import JobStore

OBJECT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


class AiInfnJobs(ServiceApp):
    """Batch jobs and Bunshin clones for hub users, queued by Kueue."""

    name = "aiinfn-jobs"
    description = (
        "The aiinfn-hub job service: submit, list, watch and cancel Kueue-managed batch jobs."
    )

    namespace = Unicode(
        config=True,
        help="""Namespace of the jobs: the notebooks' (KubeSpawner.namespace), since jobs mount the
        same claims and clones copy notebook pods. Default: the spawner's.""",
    )
    priorities = Dict(
        default_value={"low": "aiinfn-low", "normal": "aiinfn-normal", "high": "aiinfn-high"},
        key_trait=Unicode(),
        value_trait=Unicode(),
        config=True,
        help="""Priorities users may pick, by name, each a Kueue WorkloadPriorityClass (set on the
        Job as kueue.x-k8s.io/priority-class). Within a project's quota Kueue preempts lower ones
        first.""",
    )
    default_priority = Unicode(
        "normal", config=True, help="Priority of jobs that name none (a key of priorities)."
    )
    pod_priority_class = Unicode(
        "aiinfn-batch",
        config=True,
        help="PriorityClass of job pods; must rank below notebooks' so the scheduler preempts "
        "jobs, never notebooks.",
    )
    default_ttl_seconds = Int(
        86400,
        min=0,
        max=MAX_TTL_SECONDS,
        config=True,
        help="Finished jobs are deleted after this long unless they ask otherwise.",
    )
    backoff_limit = Int(
        3,
        min=0,
        max=100,
        config=True,
        help="""Failed pods (not counting preemptions) a job survives before it fails: each
        job's default, and the most its `retries` may ask for.""",
    )
    preemption_grace_seconds = Int(
        20,
        min=0,
        max=3600,
        config=True,
        help="""Seconds a job pod has to stop after SIGTERM before it is killed
        (terminationGracePeriodSeconds). When a notebook needs a job's accelerator the scheduler
        stops the job, and the user waits for it this long at most: short, but long enough for a
        job to write a checkpoint. The job's pod runs again later and does not count as failed.""",
    )
    sandbox_path = Unicode(
        "/aiinfn/sandbox", config=True, help="Where a job's sandbox files are mounted (read-only)."
    )
    offload_accelerator_kinds = List(
        Unicode(),
        ["cpu", "gpu"],
        config=True,
        help="Accelerator kinds remote sites offer: offloadable jobs may only ask for these.",
    )
    sites = Dict(
        {
            "infn-t1-htcondor": {
                "flavor": "interlink-infn-t1",
                "accepts_accelerator_kinds": ["cpu", "gpu"],
                "max_runtime_seconds": None,
                "juicefs_credentials": True,
            },
            "podman-vm": {
                "flavor": "vk-podman-vm",
                "accepts_accelerator_kinds": ["cpu"],
                "max_runtime_seconds": None,
                "juicefs_credentials": True,
            },
            "leonardo-slurm": {
                "flavor": "vk-leonardo-slurm",
                "accepts_accelerator_kinds": ["cpu", "gpu"],
                "max_runtime_seconds": 86400,
                "juicefs_credentials": False,
            },
            "hpc-bubble-slurm": {
                "flavor": "vk-hpc-bubble-slurm",
                "accepts_accelerator_kinds": ["cpu"],
                "max_runtime_seconds": 172800,
                "juicefs_credentials": False,
            },
        },
        config=True,
        help="""The remote sites an offloadable job may run at, in the order Kueue tries their
        flavors: each keyed by its virtual nodes' `virtual-node.interlink/site` label, with its
        Kueue `flavor` (helm-values/kueue-queues.yaml), the `accepts_accelerator_kinds` it runs
        (cpu, gpu, mig, fpga), its `max_runtime_seconds` (null: none; a job must then have a
        deadline_seconds within it), whether the JuiceFS credentials may be shipped to it
        (`juicefs_credentials`, default false: a job asking for the juicefs volume goes only to
        sites that allow it) and whether projects' Secrets may (`project_secrets`, default
        false: a job of a project with project_secrets goes only to sites that allow it). A job
        is offered only to the sites that accept it; one that must run remotely and that no
        site accepts is refused, naming each site's rule.
        The default is the dev cluster's four sites.""",
    )
    project_secrets = Dict(
        key_trait=Unicode(),
        value_trait=List(Unicode()),
        config=True,
        help="""Admin-managed Secrets each project's jobs get, by name: {"project": ["secret",
        ...]}, projects as in the catalog, names of Secrets in the jobs' namespace (DNS labels;
        not the platform's own: aiinfn-token-*, hub). Each is mounted read-only in every job
        of the project at /aiinfn/secrets/<name>/<key>. Users cannot name Secrets, and the
        service never reads them (the job's processes can: any member of the project who submits
        a job may read them). They count as confidential: a job carrying them runs only at
        sites whose policy says `project_secrets: true` (see sites), or locally.""",
    )
    juicefs_credentials_secret = Unicode(
        "",
        config=True,
        help="""Secret (in the jobs' namespace) with the JuiceFS mount credentials (metadata URL,
        object-store keys, as the site's FUSE mount wants them). A job that asks for the juicefs
        volume and may run remotely gets it mounted read-only at /aiinfn/juicefs-credentials,
        and goes only to sites with `juicefs_credentials: true`; local pods mount the JuiceFS
        claim instead. Its processes can read these credentials: give remote jobs a credential of
        their own. Empty: remote jobs cannot ask for JuiceFS.""",
    )
    local_flavor_label_keys = List(
        Unicode(),
        ["node-role.kubernetes.io/services"],
        config=True,
        help="""Node label keys of the local Kueue ResourceFlavors that carry none of
        c.AiInfnPlatform.accelerator_node_labels (with those, every local flavor of
        helm-values/kueue-queues.yaml must have one of the keys, the remote ones none; the default
        is the shipped `cpu` flavor's). A job that must run remotely requires
        them all absent: Kueue compares a job's node affinity only with each flavor's own label
        keys, so without them a job meant for the virtual node could be admitted to a local
        flavor whose nodes it cannot use.""",
    )
    rate_limit = Float(
        5.0, min=0.001, config=True, help="Requests per second each user may make on average."
    )
    rate_limit_burst = Int(
        20, min=1, config=True, help="Requests a user may make at once before the rate applies."
    )
    max_unfinished_jobs = Int(
        100,
        min=1,
        config=True,
        help="""Jobs one user may have that have not finished (queued, admitted or running); a
        submission beyond is refused (429) until some finish or are cancelled.""",
    )
    capacity_refresh_seconds = Float(
        60.0,
        min=1.0,
        config=True,
        help="""How long what the service read of Kueue's queues, flavors and the nodes is reused to
        refuse jobs that could never run (a changed quota or a new node counts after this long).""",
    )
    orphan_grace_seconds = Float(
        600.0,
        min=1.0,
        config=True,
        help="Sandbox files of a submission interrupted before its Job existed are removed after "
        "this long.",
    )

    @default("namespace")
    def _default_namespace(self) -> str:
        return notebook_namespace(self.config)

    @validate("namespace", "pod_priority_class")
    def _validate_object_name(self, proposal: Any) -> str:
        if not OBJECT_NAME.fullmatch(proposal["value"]):
            raise TraitError(
                f"AiInfnJobs.{proposal['trait'].name}: {proposal['value']!r} is not an object name"
            )
        return proposal["value"]

    @validate("priorities")
    def _validate_priorities(self, proposal: Any) -> dict:
        value = proposal["value"]
        for name, cls in value.items():
            if not re.fullmatch(
                r"[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?", name
            ) or not OBJECT_NAME.fullmatch(cls):
                raise TraitError(
                    f"AiInfnJobs.priorities: {name!r}: {cls!r} must map a short key to a class name"
                )
        if not value:
            raise TraitError("AiInfnJobs.priorities: offer at least one priority")
        return value

    @validate("offload_accelerator_kinds")
    def _validate_offload_accelerator_kinds(self, proposal: Any) -> list:
        unknown = set(proposal["value"]) - set(ACCELERATOR_KINDS)
        if unknown:
            raise TraitError(
                "AiInfnJobs.offload_accelerator_kinds: unknown kind(s) "
                f"{', '.join(sorted(unknown))}"
            )
        return proposal["value"]

    @validate("sites")
    def _validate_sites(self, proposal: Any) -> dict:
        try:
            site_policies(proposal["value"], ACCELERATOR_KINDS)
        except ValueError as error:
            raise TraitError(f"AiInfnJobs.sites: {error}") from None
        return proposal["value"]

    @validate("juicefs_credentials_secret")
    def _validate_juicefs_credentials_secret(self, proposal: Any) -> str:
        value = proposal["value"]
        if value and not SECRET_NAME.fullmatch(value):
            raise TraitError(
                f"AiInfnJobs.juicefs_credentials_secret: {value!r} is not a Secret name "
                "(a DNS label)"
            )
        return value

    @validate("sandbox_path")
    def _validate_sandbox_path(self, proposal: Any) -> str:
        value = proposal["value"]
        if not re.fullmatch(r"(/[A-Za-z0-9._-]+)+", value) or "/.." in value:
            raise TraitError(f"AiInfnJobs.sandbox_path: {value!r} must be a plain absolute path")
        return value

    def service(self, api_client: Any) -> JobService:
        """The operations, configured from the settings (checked: a bad key stops the start)."""
        if self.default_priority not in self.priorities:
            raise TraitError(
                f"AiInfnJobs.default_priority: {self.default_priority!r} is not in priorities"
            )
        settings = AiInfnPlatform(parent=self)
        try:
            state = hubstate.load(settings)
        except (CatalogError, PolicyError) as error:
            raise TraitError(f"invalid platform configuration: {error}") from None
        storage = AiInfnStorage(config=self.config).settings()
        storage_kinds = tuple(k for k in VOLUME_KINDS if k != "juicefs" or storage.juicefs_claim)
        rules = JobRules(
            priorities=dict(self.priorities),
            default_priority=self.default_priority,
            default_ttl_seconds=self.default_ttl_seconds,
            sandbox_path=self.sandbox_path,
            storage_kinds=storage_kinds,
            remote_volume_kinds=volumes.REMOTE_MOUNTABLE,
            offload_accelerator_kinds=frozenset(self.offload_accelerator_kinds),
            max_unfinished_jobs=self.max_unfinished_jobs,
            max_retries=self.backoff_limit,
            capacity_refresh_seconds=self.capacity_refresh_seconds,
            sites=site_policies(self.sites, ACCELERATOR_KINDS),
            juicefs_credentials_secret=self.juicefs_credentials_secret or None,
            project_secrets=self._project_secrets(state.catalog.projects),
        )
        build = BuildSettings(
            pod_priority_class=self.pod_priority_class,
            accelerator_node_labels=tuple(settings.accelerator_node_labels),
            cpu_on_accelerator_nodes=settings.cpu_on_accelerator_nodes,
            sandbox_path=self.sandbox_path,
            grace_seconds=self.preemption_grace_seconds,
            local_flavor_label_keys=tuple(
                dict.fromkeys([*settings.accelerator_node_labels, *self.local_flavor_label_keys])
            ),
            envs_claim=storage.envs_claim,
            envs_mount_path=storage.envs_mount_path,
            home_mount_path=storage.home_mount_path,
        )
        names = {key: a.display_name for key, a in state.catalog.accelerators.items()}
        return JobService(
            JobStore(api_client, self.namespace),
            Platform(state.catalog, state.default_rules, state.group_rules),
            rules,
            build,
            storage,
            IdentityStore(api_client, self.namespace, storage),
            quota_gate.shared_gate(self.config, names, self.log),
        )

    def _project_secrets(self, projects: Any) -> dict[str, tuple[str, ...]]:
        """project_secrets, checked against the catalog (a bad entry stops the start)."""
        try:
            return project_secrets(self.project_secrets, list(projects))
        except ValueError as error:
            raise TraitError(f"AiInfnJobs.project_secrets: {error}") from None

    async def setup(self) -> None:
        self.api_client = await k8s.api_client()
        try:
            self.jobs = self.service(self.api_client)
        except TraitError as error:
            await self.api_client.close()
            raise SystemExit(f"{self.name}: {error}") from None
        self.limiter = RateLimiter(self.rate_limit, self.rate_limit_burst)
        self.metrics = handlers.ServiceMetrics()
        self.health = HealthCheck(lambda: list_one_job(self.api_client, self.namespace))
        self.collector = PeriodicCallback(self._collect, self.orphan_grace_seconds * 1000 / 2)
        self.collector.start()
        self.log.info(
            "%s: jobs in namespace %s, priorities %s",
            self.name,
            self.namespace,
            ", ".join(self.priorities),
        )

    async def _collect(self) -> None:
        try:
            await self.jobs.collect_orphans(self.orphan_grace_seconds)
        except Exception:  # a failed sweep is retried at the next period
            self.log.exception("Sweeping sandboxes of interrupted submissions failed")

    async def cleanup(self) -> None:
        self.collector.stop()
        await self.api_client.close()

    def handlers(self) -> list[tuple]:
        return handlers.routes()

    def tornado_settings(self) -> dict[str, Any]:
        return {
            "openapi": openapi.document,
            "jobs": self.jobs,
            "limiter": self.limiter,
            "metrics": self.metrics,
            "health": self.health,
            "service_prefix": self.service_prefix.rstrip("/") + "/",
        }


def main(argv: list[str] | None = None) -> None:
    app = AiInfnJobs.instance()
    app.initialize(argv)
    app.start()
