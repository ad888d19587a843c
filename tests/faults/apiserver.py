"""The dev cluster's kube-apiserver stopped and started again by pid, and etcd compacted through
its v3 HTTP gateway on loopback (the dev cluster ships no etcdctl), so that a watch resuming from
a resourceVersion older than the compaction gets a real 410 Gone.

The new pid replaces the old one in the cluster's state file, so `aiinfn-devcluster down` (and
the session fixture) stop it as they stop the rest.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request

from aiinfn_dev.devcluster import cluster as cluster_module
from aiinfn_dev.devcluster import components, processes, versions
from aiinfn_dev.devcluster.cluster import DevCluster

NAME = "kube-apiserver"
# The etcd key the drill writes and deletes to move the revision past every watch's (not a
# Kubernetes key: the API server never reads it).
BUMP_KEY = b"/aiinfn-faults/bump"


def _ports(state: dict) -> components.Ports:
    fields = components.Ports.__dataclass_fields__
    return components.Ports(**{k: v for k, v in state["ports"].items() if k in fields})


def _etcd(state: dict, method: str, body: dict) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{state['ports']['etcd_client']}/v3/{method}",
        data=json.dumps(body).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def compact_etcd(cluster: DevCluster) -> int:
    """Move etcd's revision on (a write and a delete of BUMP_KEY) and compact everything before
    it: every resourceVersion handed out so far is gone. The revision compacted at."""
    state = cluster._read_state()
    key = base64.b64encode(BUMP_KEY).decode()
    _etcd(state, "kv/put", {"key": key, "value": base64.b64encode(b"1").decode()})
    revision = int(_etcd(state, "kv/deleterange", {"key": key})["header"]["revision"])
    _etcd(state, "kv/compaction", {"revision": str(revision), "physical": True})
    return revision


def stop_apiserver(cluster: DevCluster) -> None:
    """SIGTERM the API server by its recorded pid and wait until it is gone."""
    state = cluster._read_state()
    running = [processes.Running(**p) for p in state["processes"] if p["name"] == NAME]
    processes.stop(running)


def start_apiserver(cluster: DevCluster, limit: float = 120.0) -> None:
    """Start the API server with the cluster's own flags, record its pid, wait until ready."""
    with cluster._locked():
        state = cluster._read_state()
        ports = _ports(state)
        binary = versions.binaries(cluster.cache)[NAME]
        argv = components.apiserver_argv(binary, cluster.layout, ports)
        started = processes.start(NAME, argv, cluster.layout.logs / f"{NAME}.log")
        state["processes"] = [
            started.__dict__ if p["name"] == NAME else p for p in state["processes"]
        ]
        cluster._write_state(state)
    probe = cluster_module._Probe(cluster.layout, ports)
    deadline = time.monotonic() + limit
    while not _answers(probe):
        if not started.alive() or time.monotonic() > deadline:
            log = processes.log_tail(cluster.layout.logs / f"{NAME}.log")
            raise RuntimeError(f"{NAME} did not come back: {log}")
        time.sleep(0.2)


def _answers(probe: cluster_module._Probe) -> bool:
    try:
        return probe.ready(NAME)
    except OSError:
        return False
