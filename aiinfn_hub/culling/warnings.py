"""The warnings the culler gave: a small JSON file the culler writes and the hub reads.

The culler runs as a hub-managed service, in the hub's container: both see the file (in the
hub's working directory). The culler keeps there when it warned each server, so a culler that
restarts does not warn again from zero; the hub shows each user their servers' warnings as the
`announcement` of its pages (JupyterHub's template variable, given the user).
"""

from __future__ import annotations

import html
import json
import os
import time
from collections.abc import Callable
from typing import Any

VERSION = 1


class WarningStore:
    """Warnings by server (`user/name`); the file is replaced atomically at each change."""

    def __init__(self, path: str, stale_after: float) -> None:
        self.path = path
        self.stale_after = stale_after
        self.servers: dict[str, dict[str, Any]] = read(path)

    def warned_for(self, key: str, started: str, now: float) -> float | None:
        """Seconds since this server (this start of it) was first warned; None: not warned."""
        entry = self.servers.get(key)
        if entry is None or entry.get("started") != started:
            return None
        return now - float(entry["warned_at"])

    def warn(self, key: str, user: str, started: str, now: float, text: str) -> None:
        entry = self.servers.get(key)
        first = entry["warned_at"] if entry and entry.get("started") == started else now
        self.servers[key] = {
            "user": user, "started": started, "warned_at": first, "seen": now, "message": text,
        }  # fmt: skip
        self._save(now)

    def clear(self, key: str, now: float) -> None:
        if self.servers.pop(key, None) is not None:
            self._save(now)

    def _save(self, now: float) -> None:
        """Write, leaving out the warnings of servers not seen lately (stopped by their user)."""
        self.servers = {
            k: v for k, v in self.servers.items() if now - float(v["seen"]) <= self.stale_after
        }
        part = f"{self.path}.part"
        with open(part, "w") as out:
            json.dump({"version": VERSION, "servers": self.servers}, out)
        os.replace(part, self.path)


def read(path: str) -> dict[str, dict[str, Any]]:
    """The warnings in the file; none if it is missing or not ours."""
    try:
        with open(path) as source:
            data = json.load(source)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != VERSION:
        return {}
    servers = data.get("servers")
    return servers if isinstance(servers, dict) else {}


def user_announcement(path: str, stale_after: float, before: Any = None) -> Callable[[Any], str]:
    """JupyterHub's `announcement` template variable: the user's warnings (HTML-escaped),
    then `before` (an announcement set elsewhere: text, or a callable given the user)."""
    cache: dict[str, Any] = {"mtime": None, "servers": {}}

    def announcement(user: Any) -> str:
        other = before(user) if callable(before) else (before or "")
        if user is None:
            return other
        try:
            mtime = os.stat(path).st_mtime_ns
        except OSError:
            mtime = None
        if mtime != cache["mtime"]:
            cache["mtime"], cache["servers"] = mtime, read(path) if mtime else {}
        now = time.time()
        lines = [
            html.escape(str(entry.get("message", "")))
            for entry in cache["servers"].values()
            if entry.get("user") == user.name and now - float(entry["seen"]) <= stale_after
        ]
        return "<br>".join(lines + ([other] if other else []))

    return announcement
