"""When a server is culled, and when its user is warned: pure and typed (docs/culling.md).

Each rule gives the seconds left before it culls a server (inactivity, by kind; age; an idle
GPU); the one due first decides. A server is warned once that time is within `warn_before`,
and culled only once it is due AND its user was warned at least `warn_before` earlier, so a
culler that just started (or a GPU that went idle between two checks) never culls unannounced.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Action(Enum):
    KEEP = "keep"
    WARN = "warn"
    CULL = "cull"


@dataclass(frozen=True)
class Limits:
    """Seconds; 0 turns a rule off (cpu_timeout, accelerator_timeout, max_age, gpu_idle_time)."""

    cpu_timeout: float
    accelerator_timeout: float
    max_age: float
    gpu_idle_time: float
    warn_before: float


@dataclass(frozen=True)
class Server:
    """What the culler knows of one running server. `gpu_idle`: seconds its GPUs have been
    below the threshold, as far as the rule's windows tell (None: no GPU signal)."""

    inactive: float
    age: float
    accelerator: bool
    gpu_idle: float | None = None
    exempt: bool = False


@dataclass(frozen=True)
class Verdict:
    """The rule due first: `reason` (`inactive`, `age`, `gpu-idle`), `left` seconds to go."""

    reason: str
    left: float


def verdict(limits: Limits, server: Server) -> Verdict | None:
    """The rule that culls this server first, or None (exempt, or every rule off)."""
    if server.exempt:
        return None
    timeout = limits.accelerator_timeout if server.accelerator else limits.cpu_timeout
    candidates = []
    if timeout > 0:
        candidates.append(Verdict("inactive", timeout - server.inactive))
    if limits.max_age > 0:
        candidates.append(Verdict("age", limits.max_age - server.age))
    if server.accelerator and server.gpu_idle is not None and limits.gpu_idle_time > 0:
        candidates.append(Verdict("gpu-idle", limits.gpu_idle_time - server.gpu_idle))
    return min(candidates, key=lambda v: v.left, default=None)


def action(limits: Limits, found: Verdict | None, warned_for: float | None) -> Action:
    """What to do now, given how many seconds ago the user was warned (None: not warned)."""
    if found is None or found.left > limits.warn_before:
        return Action.KEEP
    warned_enough = limits.warn_before <= 0 or (
        warned_for is not None and warned_for >= limits.warn_before
    )
    return Action.CULL if found.left <= 0 and warned_enough else Action.WARN


def gpu_windows(limits: Limits) -> tuple[float, ...]:
    """The look-back windows (seconds) the GPU rule asks Prometheus about: the whole idle time,
    and the time at which the warning is due (when it is shorter)."""
    if limits.gpu_idle_time <= 0:
        return ()
    early = limits.gpu_idle_time - limits.warn_before
    return (limits.gpu_idle_time, early) if early > 0 else (limits.gpu_idle_time,)


def gpu_idle_seconds(windows_idle: dict[float, bool], age: float) -> float | None:
    """Seconds the GPU has been idle at least, from which look-back windows were all below the
    threshold (True), not (False) or had no samples (absent): the longest idle window the
    server is old enough to fill. None when no window had samples (no GPU signal)."""
    if not windows_idle:
        return None
    idle = [w for w, below in windows_idle.items() if below and age >= w]
    return max(idle, default=0.0)


def due_in(limits: Limits, found: Verdict, warned_for: float | None) -> float:
    """Seconds until the server is culled: its rule's time, and never before a warning is
    `warn_before` old."""
    return max(found.left, limits.warn_before - (warned_for or 0.0))


def message(found: Verdict, seconds: float, server_label: str, threshold: float) -> str:
    """The warning a user reads: why, when (in `seconds`), how to keep the server (plain)."""
    minutes = max(1, round(seconds / 60))
    when = f"in about {minutes} minute{'s' if minutes != 1 else ''}"
    if found.reason == "gpu-idle":
        why = (
            f"its accelerators have been below {threshold:g}% busy for a long time, even if the "
            "notebook is in use"
        )
        keep = (
            "run work on the accelerator, or stop this server and start a CPU-only one for work "
            "that needs no accelerator"
        )
    elif found.reason == "age":
        why = "it has reached the longest time a server may run"
        keep = "it cannot be extended: save your work, then start a new server"
    else:
        why = "it has not been used for a long time"
        keep = "use it (open it in the browser and run something)"
    return f"Your server {server_label} will be stopped {when}: {why}. To keep it: {keep}."
