"""`aiinfn-dev demo` end to end: cluster up, hub up, a demo user logs in, Ctrl-C stops it all."""

from __future__ import annotations

import http.cookiejar
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from aiinfn_dev.devcluster import processes
from aiinfn_dev.devcluster.cluster import DevCluster

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _login(base: str, username: str, password: str) -> tuple[int, urllib.request.OpenerDirector]:
    """Log in through the real form (xsrf included); return /hub/home's status and the browser."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(f"{base}/hub/login").read().decode()
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode(
        {"_xsrf": xsrf, "username": username, "password": password}
    ).encode()
    try:
        opener.open(f"{base}/hub/login", data=form)
    except urllib.error.HTTPError as error:
        return error.code, opener
    response = opener.open(f"{base}/hub/home")
    return (response.status if response.url.endswith("/hub/home") else 302), opener


def test_demo_runs_logs_in_and_stops_everything_on_ctrl_c(devcluster, tmp_path):
    _, session_cluster = devcluster
    if session_cluster is None:
        pytest.skip("the demo test needs the built dev cluster")
    name = f"demo-e2e-{os.getpid()}"
    hub_port, api_port = processes.free_port(), processes.free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("AIINFN_DEMO_MODE", None)
    output = tmp_path / "demo.log"
    with open(output, "wb") as log:
        demo = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aiinfn_dev.demo",
                "demo",
                "--port",
                str(hub_port),
                "--cluster-name",
                name,
                "--cluster-port",
                str(api_port),
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    cluster = DevCluster(name=name, port=api_port, cache=session_cluster.cache)
    try:
        deadline = time.monotonic() + 180
        while (
            "password:" not in output.read_text()
            and demo.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.5)
        text = output.read_text()
        assert "aiinfn-dev demo is running at" in text, text[-3000:]
        password = re.search(r"password: (\S+)", text).group(1)
        assert password not in text.replace(
            f"password: {password}", ""
        )  # printed once, never logged
        cluster_pids = cluster.status().processes
        assert {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"} <= {
            p.name for p in cluster_pids
        }

        base = f"http://127.0.0.1:{hub_port}"
        status, alice = _login(base, "alice", password)
        assert status == 200
        spawn_page = alice.open(f"{base}/hub/spawn").read().decode()
        assert "NVIDIA A100 80GB" in spawn_page and "A100 MIG slice 3g.40gb" in spawn_page
        assert re.search(r"\d+ of 4 free", spawn_page)
        assert _login(base, "alice", "not-the-password")[0] == 403
        assert _login(base, "mallory", password)[0] == 403

        os.killpg(demo.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        assert demo.wait(timeout=60) == 0
        assert not any(p.alive() for p in cluster_pids)
        assert cluster.status().state == "stopped"
        with pytest.raises(OSError):
            urllib.request.urlopen(base, timeout=2)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
        cluster.down()
