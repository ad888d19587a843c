"""Job + Kueue Workload + pods -> what a user sees about their job. Pure.

Only fields this service chose are shown (never the raw objects, whose environment or volumes
a user did not write): state, Kueue's admission (ClusterQueue, flavors) or, while pending, the
place in the project's queue and Kueue's reason, and the pods.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ... import labels, podfailure

QUOTA_RESERVED = "QuotaReserved"
ADMITTED = "Admitted"
EVICTED = "Evicted"
PREEMPTED = "Preempted"
FINISHED = "Finished"
PODS_READY = "PodsReady"
WAIT_FOR_RECOVERY = "WaitForRecovery"
FINAL_STATES = ("succeeded", "failed")
# Why Kueue preempted a workload (the reason of its Preempted condition), as a user reads it.
PREEMPTION_REASONS = {
    "InClusterQueue": "preempted by a higher-priority job of the same project",
    "InCohortReclamation": "preempted: another project took back the quota it had lent",
    "InCohortReclaimWhileBorrowing": "preempted: another project took back the quota it had lent",
    "InCohortFairSharing": "preempted to share the idle quota fairly between projects",
}
PREEMPTED_BY = "preempted by a higher-priority workload"
PODS_READY_TIMEOUT = "PodsReadyTimeout"
# A job Kueue requeued because its pods stopped running and could not start again in time: the
# scheduler stopped them for a notebook, as a rule (waitForPodsReady, docs/queues.md).
REQUEUED_STOPPED = (
    "requeued: its pods were stopped (a notebook took their accelerator, say) and could not "
    "start again; it waits in the queue and runs again when a node has room"
)
# What Kueue's topology-aware admission says when the quota allows a job but no node has room.
NO_FIT = "doesn't allow to fit"
NO_NODE_HAS_ROOM = (
    "waiting for a node with room: the project's quota allows this job, but the nodes that "
    "could run it are in use (by notebooks or other jobs)"
)
# Kueue's reasons for not reserving quota (pkg/scheduler/flavorassigner): a flavor whose quota is
# in use, and a flavor whose whole quota is smaller than the job.
_SHORT_OF_FREE = re.compile(
    r"insufficient unused quota for (?P<resource>\S+) in flavor (?P<flavor>[^,\s]+), "
    r"(?P<amount>\S+) more needed"
)
_SHORT_OF_ALL = re.compile(
    r"insufficient quota for (?P<resource>\S+) in flavor (?P<flavor>[^,\s]+), previously "
    r"considered podsets requests \((?P<before>[^)]*)\) \+ current podset request "
    r"\((?P<asked>[^)]*)\) > maximum capacity \((?P<most>[^)]*)\)"
)
RESOURCE_WORDS = {"nvidia.com/gpu": "GPU", "cpu": "CPU", "memory": "memory"}
WAITING_FOR_QUOTA = "waiting for quota"


def quota_shortfalls(message: str) -> list[str]:
    """Which of the flavors the job can use is short of what, from Kueue's pending message (its
    flavors that cannot take the job for other reasons, a taint or affinity, are left out)."""
    short = []
    for match in _SHORT_OF_FREE.finditer(message):
        resource = RESOURCE_WORDS.get(match["resource"], match["resource"])
        short.append(
            f"{match['flavor']} needs {match['amount']} more {resource} free "
            "(the rest is in use by other work)"
        )
    for match in _SHORT_OF_ALL.finditer(message):
        resource = RESOURCE_WORDS.get(match["resource"], match["resource"])
        before = f" on top of {match['before']}" if match["before"] not in ("0", "") else ""
        short.append(
            f"{match['flavor']} can never hold it: the job asks {match['asked']} {resource}"
            f"{before}, the project's quota there is {match['most']}"
        )
    return short


def _condition(obj: Mapping[str, Any] | None, kind: str) -> Mapping[str, Any] | None:
    for condition in ((obj or {}).get("status") or {}).get("conditions") or ():
        if condition.get("type") == kind and condition.get("status") == "True":
            return condition
    return None


def _pending(workload: Mapping[str, Any]) -> bool:
    return _condition(workload, QUOTA_RESERVED) is None and _condition(workload, FINISHED) is None


def positions(workloads: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """1-based place of each pending Workload (by uid) in its LocalQueue, in the order Kueue's
    BestEffortFIFO and StrictFIFO queues use: higher priority first, then the older, then by uid."""
    queues: dict[str, list[Mapping[str, Any]]] = {}
    for workload in workloads:
        if _pending(workload):
            queues.setdefault(workload["spec"].get("queueName", ""), []).append(workload)
    places = {}
    for members in queues.values():
        members.sort(
            key=lambda w: (
                -(w["spec"].get("priority") or 0),
                w["metadata"].get("creationTimestamp", ""),
                w["metadata"]["uid"],
            )
        )
        places.update({w["metadata"]["uid"]: i for i, w in enumerate(members, start=1)})
    return places


def owner_uid(workload: Mapping[str, Any]) -> str | None:
    """The uid of the Job a Workload belongs to."""
    for owner in workload["metadata"].get("ownerReferences") or ():
        if owner.get("kind") == "Job":
            return owner.get("uid")
    return None


def _interrupted(job: Mapping[str, Any], workload: Mapping[str, Any] | None) -> bool:
    """Its pods were all ready once and are not now, and no pod failure was counted: the cluster
    stopped a pod (the scheduler preempted it for a notebook, say) and the replacement waits.
    Kueue says the first (PodsReady False, WaitForRecovery); the Job's pod failure policy ignores
    such disruptions, so they leave its failed count alone (a crash would not)."""
    for condition in ((workload or {}).get("status") or {}).get("conditions") or ():
        if condition.get("type") == PODS_READY and condition.get("status") == "False":
            failed = (job.get("status") or {}).get("failed")
            return condition.get("reason") == WAIT_FOR_RECOVERY and not failed
    return False


def state(job: Mapping[str, Any], workload: Mapping[str, Any] | None) -> str:
    """queued; admitted; starting; running (a pod is ready); preempted (by Kueue, waiting in the
    queue again, or by the scheduler, its replacement pod waiting for a node); requeued (evicted
    for another reason, waiting again); succeeded; failed."""
    if _condition(job, "Complete"):
        return "succeeded"
    if _condition(job, "Failed"):
        return "failed"
    if job["spec"].get("suspend"):
        if workload is not None and _condition(workload, QUOTA_RESERVED):
            return "admitted"
        evicted = _condition(workload, EVICTED)
        if evicted is not None:
            return "preempted" if evicted.get("reason") == PREEMPTED else "requeued"
        return "preempted" if _condition(workload, PREEMPTED) else "queued"
    status = job.get("status") or {}
    # An active pod may still be Pending: only a ready one runs (`ready` is the Job controller's
    # count; a cluster too old to keep it has `active` only).
    if status.get("ready") if "ready" in status else status.get("active"):
        return "running"
    return "preempted" if _interrupted(job, workload) else "starting"


def _admission(workload: Mapping[str, Any] | None) -> dict[str, Any] | None:
    admission = ((workload or {}).get("status") or {}).get("admission")
    if not admission:
        return None
    flavors: dict[str, str] = {}
    for assignment in admission.get("podSetAssignments") or ():
        flavors.update(assignment.get("flavors") or {})
    return {
        "cluster_queue": admission.get("clusterQueue"),
        "flavors": dict(sorted(flavors.items())),
    }


def _unschedulable(pods: Iterable[Mapping[str, Any]]) -> str | None:
    """The scheduler's reason a pending pod has no node ("0/14 nodes are available: ...")."""
    for pod in pods:
        for condition in (pod.get("status") or {}).get("conditions") or ():
            if (
                condition.get("type") == "PodScheduled"
                and condition.get("status") == "False"
                and condition.get("message")
            ):
                return str(condition["message"])[:300]
    return None


def _preemption_message(
    job: Mapping[str, Any],
    workload: Mapping[str, Any] | None,
    pods: Iterable[Mapping[str, Any]] | None,
) -> str:
    """What happened to a preempted job, in our words (Kueue's own message names the preemptor's
    uids, which may be another user's), and what it waits for now."""
    if job["spec"].get("suspend"):
        reason = (_condition(workload, PREEMPTED) or {}).get("reason") or ""
        why = PREEMPTION_REASONS.get(reason, PREEMPTED_BY)
        return f"{why}; waiting in the queue to be admitted again"
    accelerator = (job["spec"]["template"]["metadata"].get("labels") or {}).get(labels.ACCELERATOR)
    hardware = f"a free {accelerator}" if accelerator and accelerator != "cpu" else "room on a node"
    message = f"{PREEMPTED_BY}; its replacement pod is waiting for {hardware}"
    detail = _unschedulable(pods or ())
    return f"{message} ({detail})" if detail else message


def _message(workload: Mapping[str, Any] | None) -> str | None:
    """Why a job waits: why it was evicted, else why it is not admitted yet; in our words where
    Kueue's are about its internals, else Kueue's."""
    if workload is None or not _pending(workload):
        return None
    evicted = _condition(workload, EVICTED)
    if evicted is not None and evicted.get("reason") == PODS_READY_TIMEOUT:
        return REQUEUED_STOPPED
    reserved = next(
        (
            c
            for c in (workload.get("status") or {}).get("conditions") or ()
            if c.get("type") == QUOTA_RESERVED
        ),
        None,
    )
    for condition in (evicted, reserved):
        if condition and condition.get("message"):
            message = str(condition["message"])
            if NO_FIT in message:
                return f"{NO_NODE_HAS_ROOM} (Kueue: {message[:300]})"
            short = quota_shortfalls(message)
            return f"{WAITING_FOR_QUOTA}: {'; '.join(short)}" if short else message[:300]
    return None


def _failure_message(
    job: Mapping[str, Any], pods: Iterable[Mapping[str, Any]] | None
) -> str | None:
    """Why a job failed, in our words: its retry limit or deadline (the Job's Failed condition),
    and how its last attempt ended and where (a site's own failure reads as the site wrote it)."""
    failed = _condition(job, "Failed")
    if failed is None:
        return None
    reason, count = failed.get("reason"), (job.get("status") or {}).get("failed", 0)
    if reason == "BackoffLimitExceeded":
        why = f"it failed {count} time{'s' if count != 1 else ''}, its retry limit"
    elif reason == "DeadlineExceeded":
        why = "it ran past its deadline (deadline_seconds)"
    else:
        why = str(failed.get("message") or reason or "it failed")[:300]
    attempts = [p for p in pods or () if (p.get("status") or {}).get("phase") == "Failed"]
    last = max(attempts, key=_finished_at, default=None)
    crash = podfailure.crashed(last, 0) if last is not None else None
    if last is None or crash is None:
        return why
    place = pod_summary(last)
    where = f"on {place['node']}" if place["site"] == "local" else f"at {place['site']}"
    return f"{why}; its last attempt, {where}: {podfailure.what_failed(crash, ())}"


def _finished_at(pod: Mapping[str, Any]) -> tuple[str, str]:
    """When a failed pod's containers ended (RFC 3339 sorts as text), then its name."""
    ended = [
        ((c.get("state") or {}).get("terminated") or {}).get("finishedAt") or ""
        for c in (pod.get("status") or {}).get("containerStatuses") or ()
    ]
    return (max(ended, default=""), pod["metadata"]["name"])


def _remote(pod_spec: Mapping[str, Any]) -> bool:
    """Kueue put a remote flavor's node label (the virtual node's) on the pod template."""
    return labels.INTERLINK_NODE in (pod_spec.get("nodeSelector") or {})


def _site_label(pod_spec: Mapping[str, Any]) -> str | None:
    """The site of the remote flavor whose node labels Kueue put on the pod (template)."""
    return (pod_spec.get("nodeSelector") or {}).get(labels.INTERLINK_SITE)


def site(job: Mapping[str, Any], workload: Mapping[str, Any] | None) -> str | None:
    """Where Kueue sent the job: the remote site it was admitted to (its flavor's site label,
    else the flavor), "local", or None while it is not admitted."""
    admission = _admission(workload)
    if admission is None or job["spec"].get("suspend"):
        return None
    pod_spec = job["spec"]["template"].get("spec") or {}
    if not _remote(pod_spec):
        return "local"
    flavors = sorted(set(admission["flavors"].values()))
    return _site_label(pod_spec) or (flavors[0] if flavors else "remote")


def _sites(annotations: Mapping[str, Any]) -> list[str] | None:
    """The sites that accept an offloadable job (none: it runs locally); None for local jobs."""
    value = annotations.get(labels.SITES)
    return None if value is None else [s for s in value.split(",") if s]


def pod_summary(pod: Mapping[str, Any]) -> dict[str, Any]:
    metadata = pod["metadata"]
    index = (metadata.get("annotations") or {}).get(labels.JOB_COMPLETION_INDEX)
    node = pod["spec"].get("nodeName")
    return {
        "name": metadata["name"],
        "index": int(index) if index is not None and index.isdigit() else None,
        "phase": (pod.get("status") or {}).get("phase"),
        "node": node,
        "site": ((_site_label(pod["spec"]) or node) if _remote(pod["spec"]) else "local")
        if node
        else None,
    }


def summarize(
    job: Mapping[str, Any],
    workload: Mapping[str, Any] | None,
    priorities: Mapping[str, str],
    position: int | None = None,
    pods: Iterable[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The JSON a user gets for one job. `priorities` maps priority names to Kueue classes."""
    metadata = job["metadata"]
    annotations = metadata.get("annotations") or {}
    job_labels = metadata.get("labels") or {}
    request = json.loads(annotations.get(labels.REQUEST) or "{}")
    status = job.get("status") or {}
    names_of = {cls: name for name, cls in priorities.items()}
    job_state = state(job, workload)
    offload = request.get("offload") or ("may" if request.get("offloadable") else "never")
    if request.get("confidential") and offload == "may":
        offload = "never"
    summary: dict[str, Any] = {
        "id": metadata["name"],
        "name": annotations.get(labels.DISPLAY_NAME),
        "owner": annotations.get(labels.OWNER_NAME),
        "kind": job_labels.get(labels.JOB_KIND),
        "project": annotations.get(labels.PROJECT),
        "queue": job_labels.get(labels.KUEUE_QUEUE),
        "priority": names_of.get(job_labels.get(labels.KUEUE_PRIORITY, "")),
        "offload": offload,
        "offloadable": offload != "never",
        "confidential": bool(request.get("confidential")),
        "sites": _sites(annotations),
        "accelerator": (job["spec"]["template"]["metadata"].get("labels") or {}).get(
            labels.ACCELERATOR
        ),
        "state": job_state,
        "created": metadata.get("creationTimestamp"),
        "started": status.get("startTime"),
        "finished": status.get("completionTime")
        or (_condition(job, "Failed") or {}).get("lastTransitionTime"),
        "completions": job["spec"].get("completions"),
        "succeeded": status.get("succeeded", 0),
        "failed": status.get("failed", 0),
        "active": status.get("active", 0),
        "admission": _admission(workload),
        "site": site(job, workload),
        "position": position if job_state in ("queued", "requeued", "preempted") else None,
        "message": (
            _preemption_message(job, workload, pods)
            if job_state == "preempted"
            else _failure_message(job, pods)
            if job_state == "failed"
            else _message(workload)
        ),
    }
    if pods is not None:
        summary["pods"] = sorted(
            (pod_summary(p) for p in pods),
            key=lambda p: (p["index"] if p["index"] is not None else -1, p["name"]),
        )
    return summary
