"""A batch Job exactly as the job service builds it for a user (plan, volumes, init containers,
manifest), but unsuspended and out of Kueue, so that the Job controller and the pod runner run
it at once: how the storage and environment tests check what a job sees, without the service."""

from __future__ import annotations

from aiinfn_hub import catalog, labels, policy, volumes
from aiinfn_hub.identity import Identity
from aiinfn_hub.services.base import HubUser
from aiinfn_hub.services.jobs.manifests import BuildSettings, JobMeta, PodParts, make_job
from aiinfn_hub.services.jobs.plan import JobRules, resolve
from aiinfn_hub.services.jobs.request import JobRequest
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
    allowed = policy.for_user(
        policy.parse_rules({"accelerators": "*", "environments": "*"}, CATALOG, "default"),
        {},
        list(projects),
    )
    plan = resolve(request, HubUser(username, frozenset(projects), False), CATALOG, allowed, RULES)
    job_volumes, mounts = volumes.for_job(settings, username, projects, plan.volume_kinds)
    user = volumes.StorageUser(username, identity, projects)
    parts = PodParts(
        image=image or plan.image,
        volumes=tuple(job_volumes),
        mounts=tuple(mounts),
        security=volumes.pod_security_context(identity),
        init_containers=tuple(volumes.init_containers(settings, user, plan.volume_kinds, IMAGE)),
    )
    job = make_job(JobMeta(name, "key", "d" * 64, "{}"), plan, parts, BuildSettings())
    job["spec"].update(suspend=False, backoffLimit=0)
    for key in (labels.KUEUE_QUEUE, labels.KUEUE_PRIORITY):
        del job["metadata"]["labels"][key]
    job["spec"]["template"]["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "100m"}}
    return job
