"""JobPlan -> Kubernetes objects: the suspended batch/v1 Job, its sandbox ConfigMap, and the
Bunshin clone of a notebook pod. Pure; every builder returns plain Kubernetes JSON.

Every Job is created suspended with its project's Kueue queue and a Kueue priority class, so
Kueue decides when and where it runs; its pods use the batch PriorityClass (below notebooks),
pass Pod Security "restricted", mount no service-account token and always request resources.
Data reaches a job only as Secret volumes the service names, never the user: the user's own
access-token Secret (the notebook's, kept fresh by the hub), its project's admin-managed
Secrets and, for remote sites that allow it, the JuiceFS mount credentials.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ... import labels, names, tokens, volumes
from ...environments import layout
from .plan import JobPlan, NotebookFacts

COMPONENT = "batch-job"
SANDBOX_COMPONENT = "batch-job-sandbox"
CONTAINER = "job"
SANDBOX_VOLUME = "aiinfn-sandbox"
NOTEBOOK_CONTAINER = "notebook"
TOKEN_VOLUMES = frozenset({tokens.VOLUME_NAME})
# Where a job finds its project's Secrets (one folder per Secret, by name) and the JuiceFS
# credentials a remote site mounts the file system with.
SECRETS_PATH = "/aiinfn/secrets"
SECRET_VOLUME_PREFIX = "aiinfn-secret-"
JUICEFS_CREDENTIALS_VOLUME = "juicefs-credentials"
JUICEFS_CREDENTIALS_PATH = "/aiinfn/juicefs-credentials"
SECRET_FILE_MODE = 0o440  # owner and the pod's fsGroup (the user's private gid) may read
# Volume sources a clone may keep; anything else (secrets, projected tokens, host paths) is
# dropped, and so is a CSI volume handed a Secret (the object-store mount uses the user's token).
CLONABLE_SOURCES = (
    "persistentVolumeClaim",
    "configMap",
    "emptyDir",
    "ephemeral",
    "csi",
    "downwardAPI",
)
# Environment a clone must not inherit: the hub's wiring of the notebook server (its tokens
# included), anything that looks like a credential, and sizes that the job sets anew.
_HUB_ENV = re.compile(r"^(JUPYTERHUB_|JPY_)")
_SECRET_LIKE = re.compile(
    r"TOKEN|SECRET|PASSW|CREDENTIAL|API_?KEY|PRIVATE|AUTH|COOKIE", re.IGNORECASE
)
_SIZE_ENV = frozenset({"MEM_LIMIT", "MEM_GUARANTEE", "CPU_LIMIT", "CPU_GUARANTEE"})
_POD_IDENTITY = (
    "runAsUser",
    "runAsGroup",
    "fsGroup",
    "fsGroupChangePolicy",
    "supplementalGroups",
    "supplementalGroupsPolicy",
)


@dataclass(frozen=True)
class BuildSettings:
    """Cluster-side settings of every job (the AiInfnJobs traits, gathered)."""

    pod_priority_class: str = "aiinfn-batch"
    accelerator_node_labels: tuple[str, ...] = ()
    cpu_on_accelerator_nodes: bool = False
    sandbox_path: str = "/aiinfn/sandbox"
    grace_seconds: int = 20
    local_flavor_label_keys: tuple[str, ...] = ()
    # Where software environments are (c.AiInfnStorage's envs_claim, envs_mount_path and
    # home_mount_path): a job in envs/NAME mounts the claim read-only.
    envs_claim: str = "aiinfn-envs"
    envs_mount_path: str = "/envs"
    home_mount_path: str = "/home/jovyan"


@dataclass(frozen=True)
class JobMeta:
    """How the Job is named and how it was asked for (kept on it for idempotency and
    resubmission)."""

    name: str
    idempotency_key: str
    digest: str
    request: str


@dataclass(frozen=True)
class PodParts:
    """The container's image, environment and volumes, the pod's identity, and the init
    container that makes (or checks) the user's folders before the job mounts them."""

    image: str
    init_containers: tuple[Mapping[str, Any], ...] = ()
    volumes: tuple[Mapping[str, Any], ...] = ()
    mounts: tuple[Mapping[str, Any], ...] = ()
    env: tuple[Mapping[str, Any], ...] = ()
    env_from: tuple[Mapping[str, Any], ...] = ()
    security: Mapping[str, Any] = field(default_factory=dict)
    working_dir: str | None = None
    image_pull_policy: str | None = None
    image_pull_secrets: tuple[Mapping[str, Any], ...] = ()


# Runs the command in a software environment (args: its folder, its reference, the command),
# or says why not: it is checked here, as the user, since only the job's pod sees the folder.
ACTIVATE_SCRIPT = """\
dir=$1 ref=$2; shift 2
if ! [ -r "$dir/aiinfn-env.json" ]; then
  echo "aiinfn: software environment $ref not found or not readable by you ($dir)" >&2
  exit 127
fi
if ! [ -d "$dir/bin" ]; then
  echo "aiinfn: software environment $ref has no bin folder (an Apptainer image?)" >&2
  exit 126
fi
if [ -d "$dir/conda-meta" ]; then export CONDA_PREFIX="$dir"; else export VIRTUAL_ENV="$dir"; fi
export PATH="$dir/bin:$PATH"
exec "$@"
"""
ACTIVATE_NAME = "aiinfn-env"
ENVS_VOLUME = "envs"


def command(plan: JobPlan, settings: BuildSettings) -> list[str]:
    """The container's command: the plan's, run in its software environment if it names one."""
    reference = layout.parse_reference(plan.software) if plan.software else None
    if plan.software is None or reference is None:
        return list(plan.command)
    origin, name = reference
    root = settings.envs_mount_path if origin == "managed" else f"{settings.home_mount_path}/envs"
    folder = f"{root}/{name}"
    return ["sh", "-c", ACTIVATE_SCRIPT, ACTIVATE_NAME, folder, plan.software, *plan.command]


def _software_volume(
    plan: JobPlan, settings: BuildSettings, pod_volumes: list[dict[str, Any]]
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The managed environments' claim, read-only, for a job in a software environment (one in
    ~/envs may layer on a managed one); a clone may have it from its notebook already."""
    if plan.software is None or not settings.envs_claim:
        return []
    if any(v["name"] == ENVS_VOLUME for v in pod_volumes):
        return []
    claim = {"claimName": settings.envs_claim, "readOnly": True}
    mount = {"name": ENVS_VOLUME, "mountPath": settings.envs_mount_path, "readOnly": True}
    return [({"name": ENVS_VOLUME, "persistentVolumeClaim": claim}, mount)]


def owner_labels(owner: str, component: str) -> dict[str, str]:
    return {
        labels.MANAGED_BY: labels.MANAGED_BY_VALUE,
        labels.PART_OF: labels.PART_OF_VALUE,
        labels.COMPONENT: component,
        labels.OWNER: names.label_value(owner),
    }


def _remote_term(plan: JobPlan, settings: BuildSettings) -> dict[str, Any]:
    """The virtual nodes of the sites that accept the job (so Kueue admits it only to their
    flavors), and none of the local flavors' label keys: Kueue compares a job's node affinity
    only with each flavor's own label keys, so without these a remote term would match every
    local flavor (and the job be admitted where its pods cannot run)."""
    absent = [{"key": key, "operator": "DoesNotExist"} for key in settings.local_flavor_label_keys]
    return {
        "matchExpressions": [
            {"key": labels.INTERLINK_NODE, "operator": "In", "values": [labels.VIRTUAL_NODE_VALUE]},
            {"key": labels.INTERLINK_SITE, "operator": "In", "values": list(plan.sites)},
            *absent,
        ]
    }


def _local_expressions(plan: JobPlan, settings: BuildSettings) -> list[dict[str, Any]]:
    expressions: list[dict[str, Any]] = [
        {"key": labels.VIRTUAL_NODE, "operator": "NotIn", "values": [labels.VIRTUAL_NODE_VALUE]}
    ]
    if plan.accelerator.kind == "cpu" and not settings.cpu_on_accelerator_nodes:
        expressions += [
            {"key": key, "operator": "DoesNotExist"} for key in settings.accelerator_node_labels
        ]
    return expressions


def _required(*terms: dict[str, Any]) -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}
        }
    }


_VIRTUAL_TOLERATION = {
    "key": labels.INTERLINK_TAINT,
    "operator": "Equal",
    "value": "true",
    "effect": "NoSchedule",
}


def _placement(plan: JobPlan, settings: BuildSettings) -> dict[str, Any]:
    """never: local nodes of the accelerator; only: the accepting sites' virtual nodes; may:
    either, and the flavor Kueue admits the job to (local ones first) decides, its node labels
    added to the pod. A job that may be offloaded but that no site accepts stays local."""
    if plan.offload == "only":
        return {
            "affinity": _required(_remote_term(plan, settings)),
            "tolerations": [_VIRTUAL_TOLERATION],
        }
    expressions = _local_expressions(plan, settings)
    if plan.offload == "may" and plan.sites:
        # The accelerator's labels go into the local term (a nodeSelector would bind the remote
        # term too); the virtual node carries no model labels.
        expressions += [
            {"key": key, "operator": "In", "values": [value]}
            for key, value in sorted(plan.accelerator.node_labels.items())
        ]
        local = {"matchExpressions": expressions}
        return {
            "affinity": _required(local, _remote_term(plan, settings)),
            "tolerations": [_VIRTUAL_TOLERATION],
        }
    placement: dict[str, Any] = {"affinity": _required({"matchExpressions": expressions})}
    if plan.accelerator.node_labels:
        placement["nodeSelector"] = dict(sorted(plan.accelerator.node_labels.items()))
    return placement


def _env(plan: JobPlan, parts: PodParts, name: str) -> list[dict[str, Any]]:
    env: dict[str, dict[str, Any]] = {e["name"]: dict(e) for e in parts.env}
    env["AIINFN_JOB_NAME"] = {"name": "AIINFN_JOB_NAME", "value": name}
    env["AIINFN_PROJECT"] = {"name": "AIINFN_PROJECT", "value": plan.project}
    env[volumes.TOKEN_FILE_ENV] = {"name": volumes.TOKEN_FILE_ENV, "value": tokens.TOKEN_PATH}
    for key, value in plan.env:
        env[key] = {"name": key, "value": value}
    return list(env.values())


def _security(parts: PodParts) -> dict[str, Any]:
    identity = {k: parts.security[k] for k in _POD_IDENTITY if k in parts.security}
    return {**identity, "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


def _main_container(
    meta: JobMeta, plan: JobPlan, parts: PodParts, mounts: list[dict[str, Any]]
) -> dict[str, Any]:
    """The job's one container: its command in the environment's image, restricted."""
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": parts.image,
        "command": list(plan.command),
        "env": _env(plan, parts, meta.name),
        "resources": {"requests": plan.resources, "limits": plan.resources},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if parts.image_pull_policy:
        container["imagePullPolicy"] = parts.image_pull_policy
    if parts.env_from:
        container["envFrom"] = [dict(e) for e in parts.env_from]
    if mounts:
        container["volumeMounts"] = mounts
    working_dir = plan.working_dir or parts.working_dir
    if working_dir:
        container["workingDir"] = working_dir
    return container


def _pod_spec(
    plan: JobPlan,
    parts: PodParts,
    settings: BuildSettings,
    container: dict[str, Any],
    pod_volumes: list[dict[str, Any]],
) -> dict[str, Any]:
    """The pod template's spec: no token, never restarted in place, placed for the plan."""
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "priorityClassName": settings.pod_priority_class,
        # SIGTERM, then this long to checkpoint before SIGKILL when a notebook takes the node.
        "terminationGracePeriodSeconds": settings.grace_seconds,
        "securityContext": _security(parts),
        **_placement(plan, settings),
        "containers": [container],
    }
    if parts.init_containers:
        pod_spec["initContainers"] = [dict(c) for c in parts.init_containers]
    if pod_volumes:
        pod_spec["volumes"] = pod_volumes
    if parts.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [dict(s) for s in parts.image_pull_secrets]
    return pod_spec


def make_job(
    meta: JobMeta, plan: JobPlan, parts: PodParts, settings: BuildSettings
) -> dict[str, Any]:
    """The suspended, Kueue-managed batch/v1 Job for this plan."""
    job_labels = {
        **owner_labels(plan.owner, COMPONENT),
        labels.JOB_KIND: plan.kind,
        labels.PROJECT: names.label_value(plan.project),
        labels.KUEUE_QUEUE: plan.queue,
        labels.KUEUE_PRIORITY: plan.priority_class,
    }
    mounts, pod_volumes = _with_sandbox(meta, plan, parts, settings)
    for volume, mount in [*data_volumes(plan), *_software_volume(plan, settings, pod_volumes)]:
        pod_volumes.append(volume)
        mounts.append(mount)
    container = _main_container(meta, plan, parts, mounts)
    container["command"] = command(plan, settings)
    pod_spec = _pod_spec(plan, parts, settings, container, pod_volumes)
    annotations = {
        labels.OWNER_NAME: plan.owner,
        labels.PROJECT: plan.project,
        labels.DISPLAY_NAME: plan.display_name,
        labels.IDEMPOTENCY_KEY: meta.idempotency_key,
        labels.REQUEST_DIGEST: meta.digest,
        labels.REQUEST: meta.request,
    }
    if plan.offload != "never":
        annotations[labels.SITES] = ",".join(plan.sites)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": meta.name, "labels": job_labels, "annotations": annotations},
        "spec": _job_spec(plan, settings, pod_spec),
    }


def _with_sandbox(
    meta: JobMeta, plan: JobPlan, parts: PodParts, settings: BuildSettings
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The pod's (mounts, volumes): the parts' own, plus the sandbox ConfigMap (named like the
    Job), mounted read-only and executable, when the job has sandbox files."""
    mounts = [dict(m) for m in parts.mounts]
    pod_volumes = [dict(v) for v in parts.volumes]
    if plan.sandbox:
        pod_volumes.append(
            {"name": SANDBOX_VOLUME, "configMap": {"name": meta.name, "defaultMode": 0o555}}
        )
        mounts.append(
            {"name": SANDBOX_VOLUME, "mountPath": settings.sandbox_path, "readOnly": True}
        )
    return mounts, pod_volumes


def _secret_volume(
    volume: str, secret: str, path: str, optional: bool = False
) -> tuple[dict, dict]:
    source: dict[str, Any] = {"secretName": secret, "defaultMode": SECRET_FILE_MODE}
    if optional:
        source["optional"] = True
    return (
        {"name": volume, "secret": source},
        {"name": volume, "mountPath": path, "readOnly": True},
    )


def data_volumes(plan: JobPlan) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(volume, mount) of each Secret the job gets, all read-only and never with subPath (the
    kubelet then updates the files in place): the owner's access token, the notebook's file
    (optional: the hub keeps the Secret only while the owner has a server), each project
    Secret in its own folder, and the JuiceFS credentials for a remote site's mount."""
    token, token_mount = _secret_volume(
        tokens.VOLUME_NAME, tokens.secret_name(plan.owner), tokens.MOUNT_DIR, optional=True
    )
    token["secret"]["items"] = [{"key": tokens.KEY, "path": tokens.KEY}]
    pairs = [(token, token_mount)]
    pairs += [
        _secret_volume(f"{SECRET_VOLUME_PREFIX}{index}", name, f"{SECRETS_PATH}/{name}")
        for index, name in enumerate(plan.secrets)
    ]
    if plan.juicefs_credentials:
        pairs.append(
            _secret_volume(
                JUICEFS_CREDENTIALS_VOLUME, plan.juicefs_credentials, JUICEFS_CREDENTIALS_PATH
            )
        )
    return pairs


def _job_spec(plan: JobPlan, settings: BuildSettings, pod_spec: dict[str, Any]) -> dict[str, Any]:
    """The Job's spec: suspended until Kueue admits it, indexed, retried only for the job's own
    failures, and deleted some time after it finishes."""
    pod_labels = {
        **owner_labels(plan.owner, COMPONENT),
        labels.JOB_KIND: plan.kind,
        labels.ACCELERATOR: plan.accelerator.key,
        # The hub's metrics count accelerator units per project from the pods (metrics.py).
        labels.PROJECT: names.label_value(plan.project),
    }
    spec: dict[str, Any] = {
        "suspend": True,
        "completions": plan.completions,
        "parallelism": plan.parallelism,
        "completionMode": "Indexed",
        "backoffLimit": plan.retries,
        # A pod preempted for a notebook (or evicted by Kueue) is not the job's fault.
        "podFailurePolicy": {
            "rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]
        },
        "ttlSecondsAfterFinished": plan.ttl_seconds,
        "template": {
            # Owner and name on the pods too: a notebook's spawn progress names the user's own
            # jobs it stops (spawn_progress.batch_victims) from the pods on the node.
            "metadata": {
                "labels": pod_labels,
                "annotations": {
                    labels.OWNER_NAME: plan.owner,
                    labels.DISPLAY_NAME: plan.display_name,
                },
            },
            "spec": pod_spec,
        },
    }
    if plan.deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = plan.deadline_seconds
    return spec


def make_sandbox(meta: JobMeta, plan: JobPlan) -> dict[str, Any]:
    """The ConfigMap holding the job's sandbox files, named like the Job (which will own it)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": meta.name,
            "labels": owner_labels(plan.owner, SANDBOX_COMPONENT),
            "annotations": {
                labels.OWNER_NAME: plan.owner,
                labels.IDEMPOTENCY_KEY: meta.idempotency_key,
                labels.REQUEST_DIGEST: meta.digest,
            },
        },
        "data": dict(sorted(plan.sandbox.items())),
    }


def sandbox_owner(job_name: str, job_uid: str) -> dict[str, Any]:
    """Patch making the Job own its sandbox, so deleting the Job deletes the files."""
    return {
        "metadata": {
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": job_name,
                    "uid": job_uid,
                    "controller": False,
                    "blockOwnerDeletion": False,
                }
            ]
        }
    }


# -- Bunshin: clones of a notebook pod ---------------------------------------------------------


def volume_kind(volume_name: str) -> str | None:
    """Which selectable job volume kind a notebook volume is (None: part of the environment)."""
    if volume_name in ("home", "scratch", "juicefs"):
        return volume_name
    if volume_name == "shared" or volume_name.startswith("project-"):
        return "projects"
    return None


def notebook_container(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    containers = pod["spec"]["containers"]
    return next((c for c in containers if c.get("name") == NOTEBOOK_CONTAINER), containers[0])


def notebook_facts(pod: Mapping[str, Any], accelerators: Mapping[str, Any]) -> NotebookFacts:
    """The defaults a clone inherits: the notebook's accelerator, size and volume kinds."""
    requests = (notebook_container(pod).get("resources") or {}).get("requests") or {}
    key = (pod["metadata"].get("labels") or {}).get(labels.ACCELERATOR, "cpu")
    accelerator = accelerators.get(key) or accelerators["cpu"]
    count = int(requests.get(accelerator.resource, 0)) if accelerator.resource else 0
    kinds = {volume_kind(v["name"]) for v in pod["spec"].get("volumes") or ()}
    return NotebookFacts(
        accelerator=accelerator.key,
        count=count,
        cpu=str(requests.get("cpu", "1")),
        memory=str(requests.get("memory", "1Gi")),
        volume_kinds=tuple(sorted(k for k in kinds if k)),
    )


def _clonable(volume: Mapping[str, Any], plan: JobPlan) -> bool:
    if volume["name"] in TOKEN_VOLUMES or not any(source in volume for source in CLONABLE_SOURCES):
        return False
    if "nodePublishSecretRef" in (volume.get("csi") or {}):
        return False
    kind = volume_kind(volume["name"])
    if kind is not None:
        return kind in plan.volume_kinds
    # Environment volumes (managed envs, CVMFS, ...) are local; a remote site gets only memory.
    return plan.offload == "never" or "emptyDir" in volume


def _clonable_env(variable: Mapping[str, Any]) -> bool:
    name = variable.get("name", "")
    secret_ref = "secretKeyRef" in (variable.get("valueFrom") or {})
    return not (
        secret_ref or _HUB_ENV.match(name) or _SECRET_LIKE.search(name) or name in _SIZE_ENV
    )


def _clone_init(pod: Mapping[str, Any], kept: set[str]) -> tuple[dict[str, Any], ...]:
    """The notebook's storage-init container for the folders the clone keeps (none if it keeps
    none, or if the notebook's was made by another version of the script)."""
    for container in pod["spec"].get("initContainers") or ():
        command = list(container.get("command") or ())
        head, args = command[:4], command[4:]
        if (
            container.get("name") != volumes.INIT_CONTAINER
            or len(args) % 4
            or head != ["sh", "-c", volumes.INIT_SCRIPT, volumes.INIT_CONTAINER]
        ):
            continue
        mounts = [m for m in container.get("volumeMounts") or () if m["name"] in kept]
        roots = {m["mountPath"] for m in mounts}
        folders = [args[i : i + 4] for i in range(0, len(args), 4) if args[i + 1] in roots]
        if not folders:
            return ()
        return (
            {
                **container,
                "command": [*head, *(a for folder in folders for a in folder)],
                "volumeMounts": mounts,
            },
        )
    return ()


def clone_parts(pod: Mapping[str, Any], plan: JobPlan) -> PodParts:
    """Image, environment and volumes of the notebook, without its tokens, secrets and hub
    wiring."""
    container = notebook_container(pod)
    kept_volumes = [v for v in pod["spec"].get("volumes") or () if _clonable(v, plan)]
    kept = {v["name"] for v in kept_volumes}
    return PodParts(
        image=container["image"],
        init_containers=_clone_init(pod, kept),
        volumes=tuple(kept_volumes),
        mounts=tuple(m for m in container.get("volumeMounts") or () if m["name"] in kept),
        env=tuple(e for e in container.get("env") or () if _clonable_env(e)),
        env_from=tuple(e for e in container.get("envFrom") or () if "configMapRef" in e),
        security=pod["spec"].get("securityContext") or {},
        working_dir=container.get("workingDir"),
        image_pull_policy=container.get("imagePullPolicy"),
        image_pull_secrets=tuple(pod["spec"].get("imagePullSecrets") or ()),
    )


def make_bunshin_job(
    meta: JobMeta, plan: JobPlan, pod: Mapping[str, Any], settings: BuildSettings
) -> dict[str, Any]:
    """A Job running `plan.command` in a copy of the caller's notebook pod."""
    return make_job(meta, plan, clone_parts(pod, plan), settings)
