"""Start, reuse, fault and stop a second, private cluster: every process is stopped by pid."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
from aiinfn_dev.devcluster import processes
from aiinfn_dev.devcluster.cluster import DevCluster
from aiinfn_dev.devcluster.errors import DevClusterError

pytestmark = pytest.mark.integration


@pytest.fixture
def private_cluster(devcluster):
    """A second cluster beside the session one (same cache), removed whatever the test does."""
    kubeconfig, session_cluster = devcluster
    if session_cluster is None:
        pytest.skip("lifecycle tests need the built dev cluster, not AIINFN_KUBECONFIG")
    cluster = DevCluster(
        name=f"lifecycle-{os.getpid()}",
        port=processes.free_port(),
        cache=session_cluster.cache,
        log=lambda message: None,
    )
    yield cluster
    cluster.down()


def test_up_reuses_then_down_stops_every_pid(private_cluster):
    # A directory left by a run whose processes died is cleared, not an obstacle.
    private_cluster.layout.root.mkdir(parents=True)
    (private_cluster.layout.root / "cluster.json").write_text(
        json.dumps(
            {
                "processes": [{"name": "etcd", "pid": 2**22 - 1, "binary": "/nonexistent"}],
                "ready": True,
            }
        )
    )
    assert private_cluster.status().state == "stale"

    assert private_cluster.up() is True
    status = private_cluster.status()
    dead = {
        p.name: (private_cluster.layout.logs / f"{p.name}.log").read_text(errors="replace")[-800:]
        for p in status.processes
        if not p.alive()
    }
    assert status.state == "running", f"not running after up(); dead, with their logs: {dead}"
    control_plane = [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
        "kueue",
    ]
    # The pod runner comes last, unless this machine cannot run it (docs/devcluster.md, Pod runner).
    assert [p.name for p in status.processes] in (control_plane, [*control_plane, "pod-runner"])
    assert private_cluster.up() is False

    assert private_cluster.down() is True
    assert not any(p.alive() for p in status.processes)
    assert private_cluster.status().state == "stopped"
    assert not private_cluster.layout.root.exists()


def test_partly_running_cluster_is_an_error_naming_the_fix(private_cluster):
    private_cluster.up()
    scheduler = next(p for p in private_cluster.status().processes if p.name == "kube-scheduler")
    os.kill(scheduler.pid, signal.SIGKILL)
    processes.stop([scheduler], grace=0)
    with pytest.raises(DevClusterError, match="partly running: run `aiinfn-devcluster down"):
        private_cluster.up()
    survivors = private_cluster.status().processes
    private_cluster.down()
    assert not any(p.alive() for p in survivors)


def test_port_taken_fails_in_one_line_and_leaves_nothing(private_cluster):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", private_cluster.port))
        holder.listen()
        with pytest.raises(
            DevClusterError, match=f"port {private_cluster.port} .* in use"
        ) as error:
            private_cluster.up()
    assert "\n" not in str(error.value)
    assert private_cluster.status().state == "stopped"


def test_cli_reports_a_missing_cluster():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "aiinfn_dev.devcluster.cli",
            "--name",
            "never-started",
            "kubeconfig",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "aiinfn-devcluster: error: cluster 'never-started' is not running: "
        "start it with `aiinfn-devcluster up`"
    )
