"""borg's repository lock, and when we may break it: only when its holder is provably gone.

borg 1.2 locks a repository with a folder `lock.exclusive` holding one empty file per holder,
named `<host id>.<pid>-<thread, hex>`, and a JSON `lock.roster` listing shared and exclusive
holders as [host id, pid, thread]. borg itself breaks a lock only when the host id is its own
and the pid is dead; a lock from another host id is kept for ever. Every backup Job's pod sets
BORG_HOST_ID to `aiinfn-backup-pod:<pod name>` (see manifests), so a holder names the pod it ran
in, and the rule is: break the lock only when every holder is one of our pods and none of those
pods is still live. Anything else (a host id of an admin's machine, an entry we cannot read, a
pod we cannot rule out) keeps the lock, and an admin looks.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOST_PREFIX = "aiinfn-backup-pod:"
EXCLUSIVE = "lock.exclusive"
ROSTER = "lock.roster"
# Phases after which a pod's containers never run again.
FINISHED_PHASES = frozenset({"Succeeded", "Failed"})


def host_id(pod_name: str) -> str:
    """BORG_HOST_ID for a pod: our prefix, then its name."""
    return f"{HOST_PREFIX}{pod_name}"


@dataclass(frozen=True)
class Holder:
    """One lock holder as borg names it."""

    host: str
    pid: int
    thread: int

    @property
    def pod(self) -> str | None:
        """The backup pod that holds the lock; None for a host that is not one of ours."""
        if self.host.startswith(HOST_PREFIX) and len(self.host) > len(HOST_PREFIX):
            return self.host[len(HOST_PREFIX) :]
        return None


@dataclass(frozen=True)
class LockState:
    """What the lock files say: whether a lock is there, its holders, and entries we could not
    read (their text, for the log)."""

    present: bool
    holders: tuple[Holder, ...] = ()
    unreadable: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decision:
    """Whether to run `borg break-lock`, and why (for the log and the admin's view)."""

    break_lock: bool
    reason: str


def parse_exclusive(name: str) -> Holder | None:
    """A file name in lock.exclusive, `host.pid-thread` (the host may hold dots and dashes);
    None when it is not in that form."""
    host_pid, dash, thread = name.rpartition("-")
    host, dot, pid = host_pid.rpartition(".")
    if not (dash and dot and host and pid.isdigit() and thread):
        return None
    try:
        return Holder(host, int(pid), int(thread, 16))
    except ValueError:
        return None


def parse_roster(text: str) -> tuple[list[Holder], list[str]]:
    """(holders, unreadable entries) of a lock.roster's `shared` and `exclusive` lists."""
    try:
        document = json.loads(text)
    except ValueError:
        return [], ["lock.roster is not JSON"]
    if not isinstance(document, dict):
        return [], ["lock.roster is not a JSON object"]
    holders, unreadable = [], []
    for key in ("shared", "exclusive"):
        for entry in document.get(key) or ():
            if _roster_entry(entry):
                holders.append(Holder(entry[0], entry[1], entry[2]))
            else:
                unreadable.append(f"lock.roster {key}: {entry!r}"[:200])
    return holders, unreadable


def _roster_entry(entry: Any) -> bool:
    return (
        isinstance(entry, list)
        and len(entry) == 3
        and isinstance(entry[0], str)
        and all(isinstance(n, int) and not isinstance(n, bool) for n in entry[1:])
    )


def lock_state(exclusive: Iterable[str] | None, roster: str | None) -> LockState:
    """The lock from the names in lock.exclusive (None: no such folder) and the roster's text
    (None: no such file)."""
    holders: list[Holder] = []
    unreadable: list[str] = []
    for name in exclusive or ():
        holder = parse_exclusive(name)
        if holder is None:
            unreadable.append(f"lock.exclusive: {name!r}"[:200])
        else:
            holders.append(holder)
    if roster is not None:
        found, bad = parse_roster(roster)
        holders += found
        unreadable += bad
    unique = tuple(dict.fromkeys(holders))
    present = exclusive is not None or roster is not None
    return LockState(present, unique, tuple(unreadable))


def read(repository: Path) -> LockState:
    """The lock state of a repository folder on a mounted file system."""
    folder, roster = repository / EXCLUSIVE, repository / ROSTER
    names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else None
    text = roster.read_text(errors="replace") if roster.is_file() else None
    return lock_state(names, text)


def read_caches(base_dir: Path) -> LockState:
    """The locks of borg's caches under a BORG_BASE_DIR (`.cache/borg/<repository id>`): a
    killed run leaves one there too, and `borg break-lock` breaks both."""
    caches = base_dir / ".cache" / "borg"
    found = [read(cache) for cache in sorted(caches.iterdir())] if caches.is_dir() else []
    return merge(*found)


def merge(*states: LockState) -> LockState:
    """One state for several locks (a repository's and its cache's): decided together."""
    holders = tuple(dict.fromkeys(h for state in states for h in state.holders))
    unreadable = tuple(text for state in states for text in state.unreadable)
    return LockState(any(state.present for state in states), holders, unreadable)


def live_pods(pods: Iterable[Mapping[str, Any]]) -> frozenset[str]:
    """Names of the pods that may still run: every pod of a complete listing whose phase is not
    Succeeded or Failed (Pending, Running, Unknown and a missing phase all count as live)."""
    return frozenset(
        pod["metadata"]["name"]
        for pod in pods
        if (pod.get("status") or {}).get("phase") not in FINISHED_PHASES
    )


def decide(state: LockState, live: Collection[str]) -> Decision:
    """Break only when every holder is one of our pods and none is live. `live` must come from
    a complete, successful listing of the namespace the backup Jobs run in."""
    if not state.present:
        return Decision(False, "the repository is not locked")
    if state.unreadable:
        return Decision(False, f"a lock entry cannot be read ({state.unreadable[0]}); kept")
    foreign = [h.host for h in state.holders if h.pod is None]
    if foreign:
        return Decision(False, f"held by {foreign[0]!r}, not a backup pod; kept for an admin")
    running = sorted({h.pod for h in state.holders if h.pod is not None and h.pod in live})
    if running:
        return Decision(False, f"held by pod {running[0]}, which is still live")
    if not state.holders:
        return Decision(True, "a lock folder without holders is left (borg removes these too)")
    gone = ", ".join(sorted({str(h.pod) for h in state.holders}))
    return Decision(True, f"held by pod {gone}, which no longer runs")


def parse_probe(log: str) -> LockState:
    """A lock probe Job's log (`manifests.LOCK_SCRIPT`): one block per locked folder (the
    repository's, its caches'), all merged; a line we do not know is an unreadable entry."""
    blocks: list[tuple[list[str] | None, list[str] | None]] = []
    unknown: list[str] = []
    for line in log.splitlines():
        word, _, rest = line.partition(" ")
        if line == "lock":
            blocks.append((None, None))
        elif not blocks:
            unknown.append(f"probe: {line!r}"[:200])
        elif line == "exclusive-folder":
            blocks[-1] = ([], blocks[-1][1])
        elif line == "roster-file":
            blocks[-1] = (blocks[-1][0], [])
        elif word == "exclusive" and blocks[-1][0] is not None:
            blocks[-1][0].append(rest)
        elif word == "roster" and blocks[-1][1] is not None:
            blocks[-1][1].append(rest)
        else:
            unknown.append(f"probe: {line!r}"[:200])
    states = [
        lock_state(names, None if roster is None else "\n".join(roster)) for names, roster in blocks
    ]
    merged = merge(*states)
    return LockState(merged.present, merged.holders, merged.unreadable + tuple(unknown))
