"""The spawner's own progress messages (docs/spawn.md, "Spawn progress"): the steps JupyterHub
and KubeSpawner cannot see (options, reservation, identity, token) and a plain reading of the
scheduler's state, shown between JupyterHub's "Server requested" and the pod's events."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from . import labels
from .profiles import SpawnPlan

Event = dict[str, Any]

# Where our steps put the progress bar: below KubeSpawner's first pod event (30 %).
CHECKED, RESERVED, IDENTITY, TOKEN, SCHEDULING = 5, 10, 15, 20, 25


def event(progress: int, message: str) -> Event:
    return {"progress": progress, "message": message}


def options_checked(plan: SpawnPlan) -> Event:
    """What was accepted, in the words of the spawn page."""
    if plan.accelerator.kind == "cpu":
        what = plan.accelerator.display_name
    else:
        what = f"{plan.count} × {plan.accelerator.display_name}"
    environment = plan.environment or f"image {plan.image}"
    return event(CHECKED, f"Options checked: {what}, {environment}, size {plan.size.display_name}")


def reserved(plan: SpawnPlan) -> Event:
    units = "unit" if plan.count == 1 else "units"
    return event(
        RESERVED,
        f"Reserved {plan.count} {units} of {plan.accelerator.display_name} "
        "until the scheduler places the server",
    )


def identity_assigned(uid: int, gid: int) -> Event:
    return event(IDENTITY, f"Storage identity assigned: uid {uid}, gid {gid}")


def token_written() -> Event:
    return event(TOKEN, "Access token written for the server (a Kubernetes Secret)")


def waiting(reason: str) -> Event:
    """The scheduler's latest FailedScheduling message, as it gave it."""
    return event(SCHEDULING, f"Waiting for the scheduler: {reason.strip() or 'no reason given'}")


def preempting(node: str, batch_units: int, victims: Victims | None = None) -> Event:
    """The scheduler has nominated a node and stops lower-priority (batch) pods there for us:
    how many jobs and for how long at most (`victims`), else the units the inventory counts."""
    if victims is not None and victims.jobs:
        jobs = "1 batch job" if victims.jobs == 1 else f"{victims.jobs} batch jobs"
        within = f" (up to {victims.grace_seconds} s)" if victims.grace_seconds else ""
        message = f"Stopping {jobs} on {node} to make room for this server{within}"
        return event(SCHEDULING, message + _whose(victims))
    held = f" holding {batch_units} accelerator unit(s)" if batch_units else ""
    return event(
        SCHEDULING,
        f"Stopping batch jobs{held} on {node} to make room for this server; "
        "each has its grace period to stop",
    )


def starting(node: str) -> Event:
    return event(SCHEDULING, f"Placed on {node}; starting")


def merged(event_: Event, shown: int) -> Event:
    """`event_` with a progress never below what the bar shows already (`shown`)."""
    return {**event_, "progress": max(event_.get("progress", 0), shown)}


# -- the batch jobs a preemption stops ---------------------------------------------------------


class Victims(NamedTuple):
    """The batch jobs the scheduler stops on a node for a server, the longest grace period
    their pods have to stop (what the user waits for at most), and the names of those among
    them that are the user's own (other users' jobs are only counted)."""

    jobs: int
    grace_seconds: int
    yours: tuple[str, ...] = ()


def batch_victims(
    pods: Iterable[Mapping[str, Any]], priority: int | None, user: str | None = None
) -> Victims:
    """The batch pods of a node (`pods`, API dicts) the scheduler stops for a server of
    `priority`: those being deleted, or, before its deletions show, those of lower priority.
    A pod is batch if Kueue queued it or a Job owns it (as the inventory counts them); jobs are
    counted by the owning Job (its pods' job-name label), a pod without one as a job of its own.
    Jobs whose pods name `user` as their owner are named (their display name, else the Job's)."""
    batch = [pod for pod in pods if _is_batch(pod) and _phase(pod) not in _FINISHED]
    chosen = [pod for pod in batch if _meta(pod).get("deletionTimestamp")]
    if not chosen and priority is not None:
        chosen = [
            pod for pod in batch if _int((pod.get("spec") or {}).get("priority"), 0) < priority
        ]
    jobs = {_job_name(pod) for pod in chosen}
    yours = {
        _job_name(pod): _display_name(pod)
        for pod in chosen
        if user is not None and (_meta(pod).get("annotations") or {}).get(labels.OWNER_NAME) == user
    }
    grace = max((_grace(pod) for pod in chosen), default=0)
    return Victims(len(jobs), grace, tuple(sorted(yours.values())))


def _whose(victims: Victims) -> str:
    """ ": your job 'train', 1 job of another user" (nothing when no job is the user's)."""
    if not victims.yours:
        return ""
    named = [f"your job {name!r}" for name in victims.yours]
    others = victims.jobs - len(victims.yours)
    if others:
        named.append("1 job of another user" if others == 1 else f"{others} jobs of other users")
    return ": " + ", ".join(named)


def _display_name(pod: Mapping[str, Any]) -> str:
    """The name the user gave the job (the job service puts it on the pods), else the Job's."""
    annotations = _meta(pod).get("annotations") or {}
    return str(annotations.get(labels.DISPLAY_NAME) or _job(pod) or _meta(pod).get("name"))


_FINISHED = ("Succeeded", "Failed")
# What the API server sets when a pod names no terminationGracePeriodSeconds.
DEFAULT_GRACE_SECONDS = 30


def _meta(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    return pod.get("metadata") or {}


def _phase(pod: Mapping[str, Any]) -> str | None:
    return (pod.get("status") or {}).get("phase")


def _int(value: Any, fallback: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else fallback


def _is_batch(pod: Mapping[str, Any]) -> bool:
    return labels.KUEUE_QUEUE in (_meta(pod).get("labels") or {}) or _job(pod) is not None


def _job(pod: Mapping[str, Any]) -> str | None:
    """The name of the Job that owns the pod, if one does."""
    for owner in _meta(pod).get("ownerReferences") or ():
        if isinstance(owner, Mapping) and owner.get("kind") == "Job":
            return str(owner.get("name"))
    return None


def _job_name(pod: Mapping[str, Any]) -> str:
    job = _job(pod)
    return f"job/{job}" if job is not None else f"pod/{_meta(pod).get('name')}"


def _grace(pod: Mapping[str, Any]) -> int:
    """Seconds the pod has to stop: those its deletion gave it, else its spec's."""
    spec_grace = _int(
        (pod.get("spec") or {}).get("terminationGracePeriodSeconds"), DEFAULT_GRACE_SECONDS
    )
    return _int(_meta(pod).get("deletionGracePeriodSeconds"), spec_grace)
