"""A Snakemake job -> a job service request, and a listed job -> what Snakemake is told. Pure.

Every resource a rule names must mean something here: Snakemake's standard ones (threads,
mem_mb, runtime...) and this platform's (accelerator, gpu, environment, offload, project,
priority). Anything else, or a value the job service would refuse, is an error naming the rule,
raised before anything is submitted. The request is then checked by the job service's own
request model, so what passes here is what the service would accept.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiinfn_hub.errors import UserError
from aiinfn_hub.services.jobs.request import MAX_DEADLINE_SECONDS, JobRequest, parse

# Resources Snakemake sets itself or that only steer its own scheduling: never sent.
SNAKEMAKE_RESOURCES = frozenset(
    {"_cores", "_nodes", "_job_count", "tmpdir", "disk_mb", "disk_mib", "disk", "mem"}
)
PLATFORM_RESOURCES = frozenset(
    {
        "accelerator",
        "gpu",
        "environment",
        "offload",
        "offloadable",
        "project",
        "priority",
        "cpus_per_task",
        "mem_mb",
        "mem_mib",
        "runtime",
    }
)
OFFLOAD_MODES = ("never", "may", "only")
FINISHED = ("succeeded", "failed")
MIN_DEADLINE_SECONDS = 60
_NAME_CHARACTERS = re.compile(r"[^a-z0-9-]+")
# The job service's volume kinds, by where the notebook and its jobs mount them.
DEFAULT_MOUNTS = {
    "home": "/home/jovyan",
    "projects": "/home/shared",
    "juicefs": "/juicefs",
    "scratch": "/scratch",
}


class RuleError(ValueError):
    """A rule's resources the job service would refuse; the message names the rule."""


@dataclass(frozen=True)
class Defaults:
    """What every job gets unless its rule says otherwise (the executor's settings)."""

    environment: str | None = None
    project: str | None = None
    priority: str | None = None
    accelerator: str | None = None


@dataclass(frozen=True)
class Step:
    """One Snakemake job as the plugin sees it: its rule(s), resources and command."""

    rule: str  # a group job's group
    jobid: int | str  # a group job's is a UUID
    attempt: int
    threads: int
    resources: Mapping[str, Any]
    script: str
    paths: tuple[str, ...] = ()


def job_name(rule: str, jobid: int | str) -> str:
    """A listing name for the jobs page: 'smk-<rule>-<jobid>' (a group's: its name and the
    start of its id), within the service's pattern."""
    stem = _NAME_CHARACTERS.sub("-", rule.lower()).strip("-")[:24].strip("-") or "rule"
    return _NAME_CHARACTERS.sub("-", f"smk-{stem}-{jobid}".lower())[:40].rstrip("-")


def idempotency_key(run: str, step: Step) -> str:
    """The same for a resent submission of this attempt, different for Snakemake's retry."""
    digest = hashlib.sha256(f"{step.rule}\n{step.jobid}".encode()).hexdigest()[:12]
    return f"smk:{run}:{digest}:{step.jobid}:{step.attempt}"


def _whole(rule: str, name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise RuleError(f"rule {rule}: resource {name} must be a whole number")
    if value < low:
        raise RuleError(f"rule {rule}: resource {name} must be at least {low}")
    return int(value)


def _text(rule: str, name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise RuleError(f"rule {rule}: resource {name} must be a name (a string)")
    return value


def _offload(rule: str, resources: Mapping[str, Any]) -> str | None:
    if "offload" in resources and "offloadable" in resources:
        raise RuleError(f"rule {rule}: give offload or offloadable, not both")
    if "offloadable" in resources:
        value = resources["offloadable"]
        if value not in (0, 1, "true", "false", "yes", "no"):
            raise RuleError(f"rule {rule}: resource offloadable must be 1 or 0 (true or false)")
        return "may" if value in (1, "true", "yes") else "never"
    if "offload" in resources:
        value = resources["offload"]
        if value not in OFFLOAD_MODES:
            modes = ", ".join(OFFLOAD_MODES)
            raise RuleError(f"rule {rule}: resource offload must be one of {modes}")
        return str(value)
    return None


def _memory(rule: str, resources: Mapping[str, Any]) -> str | None:
    for name in ("mem_mib", "mem_mb"):
        if name in resources:
            return f"{_whole(rule, name, resources[name], 1)}Mi"
    return None


def _deadline(rule: str, resources: Mapping[str, Any]) -> int | None:
    if "runtime" not in resources:
        return None
    seconds = _whole(rule, "runtime", resources["runtime"], 1) * 60
    if seconds > MAX_DEADLINE_SECONDS:
        raise RuleError(f"rule {rule}: runtime is over {MAX_DEADLINE_SECONDS // 60} minutes")
    return max(seconds, MIN_DEADLINE_SECONDS)


def volume_kind(path: str, mounts: Mapping[str, str]) -> str | None:
    """The volume kind an absolute path in a job lies on, if any (the longest mount wins)."""
    path = posixpath.normpath(path)
    found = [
        (len(root), kind)
        for kind, root in mounts.items()
        if path == root or path.startswith(root.rstrip("/") + "/")
    ]
    return max(found)[1] if found else None


def volumes(
    rule: str,
    offload: str,
    working_dir: str,
    paths: Iterable[str],
    mounts: Mapping[str, str],
    remote: frozenset[str],
) -> list[str] | None:
    """What a job mounts: the service's defaults for a local job; for an offloadable one, the
    volumes its folder and files lie on. The job service's rules, checked before anything is
    submitted: a remote site mounts no local-only storage, and a job that may run either here or
    there mounts nothing (JuiceFS is the cluster's claim here, the site's own mount there)."""
    if offload == "never":
        return None
    places = [working_dir, *(posixpath.join(working_dir, p) for p in paths)]
    kinds = sorted({k for k in (volume_kind(p, mounts) for p in places) if k is not None})
    local = [k for k in kinds if k not in remote]
    shown = ", ".join(sorted(remote)) or "none"
    if local:
        raise RuleError(
            f"rule {rule}: an offloaded step may run at a remote site, which cannot mount "
            f"{', '.join(local)} (local-only storage, where its folder or files are); remote "
            f"sites mount: {shown}. Put the workflow on {shown}, or give this rule offload='never'"
        )
    if kinds and offload == "may":
        raise RuleError(
            f"rule {rule}: a step that may run here or at a remote site cannot mount "
            f"{', '.join(kinds)} (the cluster's volume here, the site's own mount there, and a job "
            "carries one); give offload='only' (a remote site) or 'never' (here)"
        )
    return kinds


def request(
    step: Step,
    defaults: Defaults,
    working_dir: str,
    run: str,
    user: str = "jovyan",
    mounts: Mapping[str, str] = DEFAULT_MOUNTS,
    remote: frozenset[str] = frozenset({"juicefs"}),
) -> dict[str, Any]:
    """The job service request for one Snakemake job; RuleError when it would be refused."""
    rule, res = step.rule, step.resources
    unknown = sorted(set(res) - SNAKEMAKE_RESOURCES - PLATFORM_RESOURCES)
    if unknown:
        raise RuleError(
            f"rule {rule}: unknown resource(s) {', '.join(unknown)}; the aiinfn executor "
            f"knows: {', '.join(sorted(PLATFORM_RESOURCES))} and threads"
        )
    cpus = _whole(rule, "cpus_per_task", res["cpus_per_task"], 1) if "cpus_per_task" in res else 0
    accelerator = _text(rule, "accelerator", res["accelerator"]) if "accelerator" in res else None
    offload = _offload(rule, res)
    body: dict[str, Any] = {
        "name": job_name(rule, step.jobid),
        "script": step.script,
        "working_dir": working_dir,
        "cpu": str(cpus or max(step.threads, 1)),
        "memory": _memory(rule, res),
        "deadline_seconds": _deadline(rule, res),
        "accelerator": accelerator or defaults.accelerator,
        "count": _whole(rule, "gpu", res["gpu"], 0) if "gpu" in res else None,
        "offload": offload,
        "volumes": volumes(rule, offload or "never", working_dir, step.paths, mounts, remote),
        "idempotency_key": idempotency_key(run, step),
        # Snakemake asks getpass for the user's name, which fails where the pod's uid has no
        # passwd entry (any image not made for it); the notebook's name is as good.
        "env": {"USER": user},
    }
    for name in ("environment", "project", "priority"):
        given = _text(rule, name, res[name]) if name in res else getattr(defaults, name)
        body[name] = given
    body = {k: v for k, v in body.items() if v is not None}
    return checked(rule, body)


def checked(rule: str, body: dict[str, Any]) -> dict[str, Any]:
    """The body as the job service's own request model checks it, or a RuleError with its
    reasons (field names, never values)."""
    try:
        parse(JobRequest, json.dumps(body).encode())
    except UserError as error:
        raise RuleError(f"rule {rule}: the job service would refuse it: {error.message}") from None
    return body


def outcome(summary: Mapping[str, Any] | None) -> str:
    """running, succeeded, failed or gone (no longer listed: cancelled elsewhere). A job with a
    failed pod has failed for Snakemake, which decides about retries itself (a pod the cluster
    stopped, preempted say, is not counted as failed by the job service's Jobs)."""
    if summary is None:
        return "gone"
    state = summary.get("state")
    if state in FINISHED:
        return str(state)
    return "failed" if summary.get("failed") else "running"


def failure_message(summary: Mapping[str, Any] | None, logs: Mapping[str, Any] | None) -> str:
    """What Snakemake prints for a failed job: the service's reason and its log's last lines."""
    if summary is None:
        return "its job is no longer listed by the job service (cancelled on the jobs page?). "
    parts = [f"job {summary.get('id')} failed"]
    if summary.get("message"):
        parts[0] += f": {summary['message']}"
    if summary.get("state") not in FINISHED:
        parts[0] += " (stopped: its pod failed, and Snakemake decides about retries)"
    for pod in (logs or {}).get("pods") or ():
        text = str(pod.get("log") or "").rstrip()
        if text:
            parts.append(f"last lines of the log of pod {pod.get('pod')}:\n{text}")
    return "\n".join(parts) + "\n"
