"""A batch Job (or a Bunshin clone) exactly as the job service builds it for a user (plan,
volumes, init containers, manifest), but unsuspended and out of Kueue, so that the Job controller
and the pod runner run it at once: how the storage and environment tests check what a job sees,
without the service."""

from __future__ import annotations

from aiinfn_hub import catalog, labels, policy, volumes
from aiinfn_hub.identity import Identity
from aiinfn_hub.services.base import HubUser
from aiinfn_hub.services.jobs import manifests
from aiinfn_hub.services.jobs.manifests import BuildSettings, JobMeta, PodParts, make_job
from aiinfn_hub.services.jobs.plan import JobPlan, JobRules, NotebookFacts, resolve
from aiinfn_hub.services.jobs.request import AnyRequest, CloneRequest, JobRequest
from aiinfn_hub.storage_config import StorageSettings

# The catalog's CPU image: the pod runner plays it with the notebook environment.
IMAGE = "harbor.cloud.infn.it/ai-infn/cpu:2025.10"
CATALOG = catalog.load(catalog.default_path())
RULES = JobRules(
    priorities={"normal": "aiinfn-normal"},
    default_priority="normal",
    default_ttl_seconds=600,
    sandbox_path="/aiinfn/sandbox",
    storage_kinds=("home", "projects", "scratch"),
    remote_volume_kinds=volumes.REMOTE_MOUNTABLE,
    offload_accelerator_kinds=frozenset({"cpu"}),
)


def unqueued_job(
    name: str,
    username: str,
    identity: Identity,
    projects: tuple[str, ...],
    request: JobRequest,
    image: str | None = None,
) -> dict:
    """The Job of `request` for this user, named `name`; its container runs `image` (default:
    the plan's) with a small CPU request, so any local node takes it."""
    settings = StorageSettings()
    plan = _plan(request, username, projects)
    job_volumes, mounts = volumes.for_job(settings, username, projects, plan.volume_kinds)
    user = volumes.StorageUser(username, identity, projects)
    parts = PodParts(
        image=image or plan.image,
        volumes=tuple(job_volumes),
        mounts=tuple(mounts),
        security=volumes.pod_security_context(identity),
        init_containers=tuple(volumes.init_containers(settings, user, plan.volume_kinds, IMAGE)),
    )
    return _unqueued(make_job(_meta(name), plan, parts, BuildSettings()))


def unqueued_clone(
    name: str, username: str, projects: tuple[str, ...], request: CloneRequest, notebook: dict
) -> dict:
    """The Bunshin Job of `request`, cloning the notebook pod `notebook` (its manifest)."""
    facts = manifests.notebook_facts(notebook, CATALOG.accelerators)
    plan = _plan(request, username, projects, facts)
    return _unqueued(manifests.make_bunshin_job(_meta(name), plan, notebook, BuildSettings()))


def _plan(
    request: AnyRequest,
    username: str,
    projects: tuple[str, ...],
    notebook: NotebookFacts | None = None,
) -> JobPlan:
    allowed = policy.for_user(
        policy.parse_rules({"accelerators": "*", "environments": "*"}, CATALOG, "default"),
        {},
        list(projects),
    )
    caller = HubUser(username, frozenset(projects), False)
    return resolve(request, caller, CATALOG, allowed, RULES, notebook)


def _meta(name: str) -> JobMeta:
    return JobMeta(name, "key", "d" * 64, "{}")


def _unqueued(job: dict) -> dict:
    job["spec"].update(suspend=False, backoffLimit=0)
    for key in (labels.KUEUE_QUEUE, labels.KUEUE_PRIORITY):
        del job["metadata"]["labels"][key]
    job["spec"]["template"]["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "100m"}}
    return job
