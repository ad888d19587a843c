"""Where a spawn's time goes, from the hub's own log lines (millisecond timestamps).

Per spawn: the hub's handling of the POST (its logged duration), split at KubeSpawner's
"Attempting to create pod" line into before the create (JupyterHub's spawn set-up and the
spawner's load_user_options: for AiInfnSpawner validation, identity, the token Secret) and from
the create to the answer (the create itself, KubeSpawner waiting for Running in its reflector,
the hub reaching the server's URL, the proxy route).
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

STAMP = r"^\[\w (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) JupyterHub "
CREATE = re.compile(STAMP + r"spawner:\d+\] Attempting to create pod jupyter-(\S+),")
ANSWER = re.compile(STAMP + r"log:\d+\] 201 POST /hub/api/users/(\S+)/server \S+ ([0-9.]+)ms")


def _time(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()


def phases(log: Path, user: str) -> list[tuple[float, float]]:
    """(before the create, create to answer) in ms for each spawn of `user`, in order."""
    creates, result = [], []
    for line in log.read_text(errors="replace").splitlines():
        match = CREATE.match(line)
        if match and match[2].rstrip(",") == user:
            creates.append(_time(match[1]))
            continue
        match = ANSWER.match(line)
        if match and match[2] == user and creates:
            answered, took = _time(match[1]), float(match[3]) / 1000
            created = creates.pop(0)
            result.append(
                (
                    round((created - (answered - took)) * 1000, 1),
                    round((answered - created) * 1000, 1),
                )
            )
    return result
