"""Pod status and events as the kubelet reports them (pure), for the pod runner.

Container statuses, the pod phase, conditions, restart decisions and Event bodies are literal
dicts in the API's own shape, so the runner's patches read like the kubelet's and the tests
compare them as written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

KUBELET = "kubelet"
BACKOFF_START_SECONDS = 10.0
BACKOFF_CAP_SECONDS = 300.0
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
LOST_MESSAGE = "The container could not be located when the pod was terminated"


def _base(
    container: Mapping[str, Any],
    restart_count: int,
    last_state: Mapping[str, Any] | None,
    ready: bool,
    started: bool,
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "name": container["name"],
        "image": container["image"],
        "ready": ready,
        "started": started,
        "restartCount": restart_count,
    }
    if last_state:
        status["lastState"] = dict(last_state)
    return status


def waiting(
    container: Mapping[str, Any],
    reason: str,
    message: str | None = None,
    restart_count: int = 0,
    last_state: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    state: dict[str, Any] = {"reason": reason}
    if message:
        state["message"] = message
    return {
        **_base(container, restart_count, last_state, False, False),
        "state": {"waiting": state},
    }


def running(
    container: Mapping[str, Any],
    started_at: str,
    ready: bool,
    restart_count: int = 0,
    last_state: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        **_base(container, restart_count, last_state, ready, True),
        "state": {"running": {"startedAt": started_at}},
    }


def terminated(
    container: Mapping[str, Any],
    exit_code: int,
    finished_at: str,
    started_at: str | None = None,
    restart_count: int = 0,
    reason: str | None = None,
    message: str | None = None,
    last_state: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A finished container; the reason is Completed or Error unless given (StartError, ...)."""
    state: dict[str, Any] = {
        "exitCode": exit_code,
        "reason": reason or ("Completed" if exit_code == 0 else "Error"),
    }
    if started_at:
        state["startedAt"] = started_at
    state["finishedAt"] = finished_at
    if message:
        state["message"] = message
    return {
        **_base(container, restart_count, last_state, False, False),
        "state": {"terminated": state},
    }


def log_content(cri_log: bytes) -> bytes:
    """What a container wrote, from its CRI log ("<time> <stream> <P|F> <text>" lines; P lines
    are parts of one longer line)."""
    out = []
    for record in cri_log.split(b"\n"):
        parts = record.split(b" ", 3)
        if len(parts) == 4:
            out.append(parts[3] + (b"\n" if parts[2] == b"F" else b""))
    return b"".join(out)


def fallback_message(cri_log: bytes) -> str:
    """The termination message the kubelet takes from a failed container's log when its
    terminationMessagePolicy is FallbackToLogsOnError: the last 80 lines, at most 2048 bytes."""
    lines = log_content(cri_log).splitlines(keepends=True)[-FALLBACK_LOG_LINES:]
    return b"".join(lines)[-FALLBACK_LOG_BYTES:].decode(errors="replace")


def should_restart(restart_policy: str, exit_code: int) -> bool:
    return restart_policy == "Always" or (restart_policy == "OnFailure" and exit_code != 0)


def restart_delay(restart_count: int) -> float:
    """The kubelet's crash-loop back-off before restart number restart_count (1, 2, ...)."""
    return min(BACKOFF_CAP_SECONDS, BACKOFF_START_SECONDS * 2 ** max(restart_count - 1, 0))


def _state(status: Mapping[str, Any]) -> str:
    return next(iter(status.get("state") or {"waiting": {}}))


def _has_run(status: Mapping[str, Any]) -> bool:
    return "terminated" in (status.get("lastState") or {})


def _exit_code(status: Mapping[str, Any]) -> int | None:
    state = status.get("state") or {}
    return state["terminated"]["exitCode"] if "terminated" in state else None


def phase(
    restart_policy: str,
    init_statuses: Iterable[Mapping[str, Any]],
    statuses: Iterable[Mapping[str, Any]],
) -> str:
    """The pod phase the kubelet derives from its containers.

    Init containers must all complete first; then a container that never started keeps the pod
    Pending, a running one makes it Running, and once none runs the restart policy decides."""
    for status in init_statuses:
        code = _exit_code(status)
        if code == 0:
            continue
        return "Failed" if code is not None and restart_policy == "Never" else "Pending"
    statuses = list(statuses)
    never_started = [s for s in statuses if _state(s) == "waiting" and not _has_run(s)]
    if never_started or not statuses:
        return "Pending"
    if any(_state(s) == "running" for s in statuses):
        return "Running"
    if restart_policy == "Always":
        return "Running"
    if all(_exit_code(s) == 0 for s in statuses):
        return "Succeeded"
    if restart_policy == "Never" and all(_state(s) == "terminated" for s in statuses):
        return "Failed"
    return "Running"


def terminal_phase(statuses: Iterable[Mapping[str, Any]]) -> str:
    """The phase of a pod whose containers were all stopped because it is being deleted."""
    return "Succeeded" if all(_exit_code(s) == 0 for s in statuses) else "Failed"


def _unready(statuses: Iterable[Mapping[str, Any]]) -> list[str]:
    return [s["name"] for s in statuses if not s.get("ready")]


def conditions(
    existing: Iterable[Mapping[str, Any]],
    now: str,
    pod_phase: str,
    init_statuses: list[Mapping[str, Any]],
    statuses: list[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """PodReadyToStartContainers, Initialized, ContainersReady and Ready; a condition keeps its
    lastTransitionTime while its status does not change."""
    before = {c.get("type"): c for c in existing}
    incomplete = [s["name"] for s in init_statuses if _exit_code(s) != 0]
    unready = _unready(statuses)
    wanted: list[tuple[str, bool, str | None, str | None]] = [
        ("PodReadyToStartContainers", True, None, None),
        (
            "Initialized",
            not incomplete,
            "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(incomplete)}]",
        ),
    ]
    if pod_phase in ("Succeeded", "Failed"):
        wanted += [
            ("ContainersReady", False, "PodCompleted", None),
            ("Ready", False, "PodCompleted", None),
        ]
    else:
        message = f"containers with unready status: [{' '.join(unready)}]"
        wanted += [
            ("ContainersReady", not unready, "ContainersNotReady", message),
            ("Ready", not unready, "ContainersNotReady", message),
        ]
    out = []
    for kind, ok, reason, message in wanted:
        status = "True" if ok else "False"
        old = before.get(kind) or {}
        condition: dict[str, Any] = {
            "type": kind,
            "status": status,
            "lastProbeTime": None,
            "lastTransitionTime": old["lastTransitionTime"]
            if old.get("status") == status and old.get("lastTransitionTime")
            else now,
        }
        if not ok and reason:
            condition["reason"] = reason
            if message:
                condition["message"] = message
        out.append(condition)
    return out


def regular_init(
    pod: Mapping[str, Any], init_statuses: Iterable[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The statuses of init containers that must complete (native sidecars keep running)."""
    sidecars = {
        c["name"]
        for c in pod["spec"].get("initContainers") or []
        if c.get("restartPolicy") == "Always"
    }
    return [s for s in init_statuses if s["name"] not in sidecars]


def status_patch(
    pod: Mapping[str, Any],
    pod_phase: str,
    init_statuses: list[Mapping[str, Any]],
    statuses: list[Mapping[str, Any]],
    pod_ip: str,
    host_ip: str,
    start_time: str,
    now: str,
) -> dict[str, Any]:
    """The pods/status strategic merge patch: conditions merge by type (the scheduler's stay),
    container status lists are replaced whole."""
    status: dict[str, Any] = {
        "phase": pod_phase,
        "conditions": conditions(
            (pod.get("status") or {}).get("conditions") or [],
            now,
            pod_phase,
            regular_init(pod, init_statuses),
            statuses,
        ),
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": start_time,
        "containerStatuses": [dict(s) for s in statuses],
    }
    if init_statuses:
        status["initContainerStatuses"] = [dict(s) for s in init_statuses]
    return {"status": status}


def event(
    pod: Mapping[str, Any],
    reason: str,
    message: str,
    now: str,
    suffix: str,
    container: str | None = None,
    warning: bool = False,
) -> dict[str, Any]:
    """A core/v1 Event about the pod (or one of its containers) from the node's kubelet."""
    meta = pod["metadata"]
    node = pod["spec"].get("nodeName", "")
    involved: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": meta["name"],
        "namespace": meta["namespace"],
        "uid": meta["uid"],
    }
    if container:
        involved["fieldPath"] = f"spec.containers{{{container}}}"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{suffix}", "namespace": meta["namespace"]},
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "type": "Warning" if warning else "Normal",
        "source": {"component": KUBELET, "host": node},
        "reportingComponent": KUBELET,
        "reportingInstance": node,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


def logs_object(
    pod: Mapping[str, Any], files: Mapping[str, tuple[str, str | None]]
) -> dict[str, Any]:
    """kwok's Logs object for the pod: where its kubelet endpoint finds each container's log
    (current and previous run); owned by the pod, so it goes when the pod goes."""
    meta = pod["metadata"]
    logs = []
    for name, (current, previous) in sorted(files.items()):
        entry: dict[str, Any] = {"containers": [name], "logsFile": current, "follow": True}
        if previous:
            entry["previousLogsFile"] = previous
        logs.append(entry)
    return {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Logs",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]}
            ],
        },
        "spec": {"logs": logs},
    }
