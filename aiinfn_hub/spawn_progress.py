"""The spawner's own progress messages (docs/spawn.md, "Spawn progress"): the steps JupyterHub
and KubeSpawner cannot see (options, reservation, identity, token) and a plain reading of the
scheduler's state, shown between JupyterHub's "Server requested" and the pod's events."""

from __future__ import annotations

from typing import Any

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


def preempting(node: str, batch_units: int) -> Event:
    """The scheduler has nominated a node and stops lower-priority (batch) pods there for us."""
    held = f" holding {batch_units} accelerator unit(s)" if batch_units else ""
    return event(
        SCHEDULING,
        f"Stopping batch jobs{held} on {node} to make room for this server; "
        "each has its grace period to stop (30 s unless it set another)",
    )


def starting(node: str) -> Event:
    return event(SCHEDULING, f"Placed on {node}; starting")


def merged(event_: Event, shown: int) -> Event:
    """`event_` with a progress never below what the bar shows already (`shown`)."""
    return {**event_, "progress": max(event_.get("progress", 0), shown)}
