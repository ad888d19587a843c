"""Why a notebook pod will not start (pure): a container that keeps crashing or has exited, and
the last lines of its log made safe to show to the user.

The spawner's watchdog (spawner.py) reads the pod from KubeSpawner's reflector and the log from
the pods/log API; these functions only decide and format, so they are tested on literal pods.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

REDACTED = "[redacted]"
# Longest line kept; the rest of a longer line is cut with an ellipsis.
MAX_LINE_CHARS = 300
# Values shorter than this are never treated as secrets (they would mask ordinary words).
MIN_SECRET_CHARS = 8

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_JWT = re.compile(r"\beyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*")
_KEYED = re.compile(
    r"(?i)((?:token|secret|password|passwd|api[_-]?key|authorization|cookie)[\w-]*"
    r"[\"']?\s*[:=]\s*[\"']?"
    r"(?:(?:bearer|token|basic)\s+)?)[^\s\"',;&]+"
)
_OPAQUE = re.compile(r"(?<![\w-])(?=[\w-]*\d)(?=[\w-]*[A-Za-z])[\w-]{32,}(?![\w-])")


@dataclass(frozen=True)
class Crash:
    """A container that makes the start hopeless."""

    container: str
    init: bool
    exit_code: int | None
    reason: str
    message: str
    restarts: int


def crashed(pod: Mapping[str, Any], max_restarts: int) -> Crash | None:
    """The first container (init containers first) that has ended and will not run again (the
    pod has Failed or Succeeded), or that has failed again after `max_restarts` restarts; None
    while the pod may still start.

    restartCount counts the restarts made so far (the kubelet increments it when it starts the
    container again), so a container waiting in CrashLoopBackOff with restartCount n has failed
    n + 1 times."""
    status = pod.get("status") or {}
    final = status.get("phase") in ("Failed", "Succeeded")
    for init, key in ((True, "initContainerStatuses"), (False, "containerStatuses")):
        for container in status.get(key) or []:
            state = container.get("state") or {}
            ended = state.get("terminated")
            if ended is None and "waiting" in state:
                ended = (container.get("lastState") or {}).get("terminated")
            if ended is None or (init and ended.get("exitCode") == 0):
                continue
            restarts = int(container.get("restartCount") or 0)
            if final or restarts >= max_restarts:
                return Crash(
                    container=str(container.get("name", "")),
                    init=init,
                    exit_code=ended.get("exitCode"),
                    reason=str(ended.get("reason") or ""),
                    message=str(ended.get("message") or ""),
                    restarts=restarts,
                )
    return None


def secret_values(*held: Any) -> list[str]:
    """Every string of at least MIN_SECRET_CHARS characters in what the hub holds for the user
    (its API token, the whole auth_state, nested), longest first so no value is half-masked."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, str):
            if len(value) >= MIN_SECRET_CHARS:
                found.add(value)
        elif isinstance(value, Mapping):
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple, set)):
            for item in value:
                walk(item)

    for value in held:
        walk(value)
    return sorted(found, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str]) -> str:
    """Mask what the hub holds for the user, and whatever looks like a credential: JSON web
    tokens, values after token/secret/password/api-key/authorization/cookie, and opaque runs of
    32 or more letters and digits (hex and URL-safe tokens)."""
    for secret in secrets:
        if len(secret) >= MIN_SECRET_CHARS:
            text = text.replace(secret, REDACTED)
    text = _JWT.sub(REDACTED, text)
    text = _KEYED.sub(lambda m: m.group(1) + REDACTED, text)
    return _OPAQUE.sub(REDACTED, text)


def log_excerpt(log: str, secrets: Iterable[str], max_lines: int, max_bytes: int) -> str:
    """The last lines of a container log, safe to show: secrets masked (see redact), terminal
    escapes and control characters removed, lines cut at MAX_LINE_CHARS, at most `max_lines`
    lines and `max_bytes` bytes of UTF-8 (older lines are dropped first)."""
    text = _CONTROL.sub("", _ANSI.sub("", redact(log.replace("\r\n", "\n"), secrets)))
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    lines = [
        line if len(line) <= MAX_LINE_CHARS else line[: MAX_LINE_CHARS - 1] + "…"
        for line in (lines[-max_lines:] if max_lines > 0 else [])
    ]
    while lines and len("\n".join(lines).encode()) > max_bytes:
        lines.pop(0)
    return "\n".join(lines)


def _safe_line(text: str, secrets: Iterable[str]) -> str:
    line = " ".join(_CONTROL.sub(" ", _ANSI.sub("", redact(text, secrets))).split())
    return line if len(line) <= MAX_LINE_CHARS else line[: MAX_LINE_CHARS - 1] + "…"


def what_failed(crash: Crash, secrets: Iterable[str], excerpt: str | None = None) -> str:
    """Which container failed and how, e.g. "container 'job' failed (exit code 1; the remote
    site failed the job)": the runtime's message masked like a log line, and left out when it is
    already in `excerpt` (a message the kubelet took from the log, FallbackToLogsOnError)."""
    what = f"{'set-up container' if crash.init else 'container'} {crash.container!r}"
    if crash.restarts:
        what += f" failed again after {crash.restarts} restart{'s' if crash.restarts != 1 else ''}"
    elif crash.exit_code == 0:
        what += " exited"
    else:
        what += " failed"
    detail = [f"exit code {crash.exit_code}"] if crash.exit_code is not None else []
    if crash.reason and crash.reason not in ("Error", "Completed"):
        detail.append(crash.reason)
    runtime = _safe_line(crash.message, secrets) if crash.message else ""
    if runtime and not (excerpt and runtime in " ".join(excerpt.split())):
        detail.append(runtime)
    return f"{what} ({'; '.join(detail)})" if detail else what


def user_message(
    crash: Crash, excerpt: str | None, secrets: Iterable[str], show_log: bool = True
) -> str:
    """What the user reads: which container failed, how (the runtime's message masked like the
    log), and, with show_log, its last log lines (from log_excerpt; None: it could not be read)."""
    message = "your server could not start: " + what_failed(
        crash, secrets, excerpt if show_log else None
    )
    if not show_log:
        return message
    if excerpt is None:
        return message + "; its log could not be read"
    if not excerpt:
        return message + "; it wrote no log"
    return message + f"; its last log lines:\n{excerpt}"
