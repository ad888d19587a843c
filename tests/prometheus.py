"""A real Prometheus (Debian's package, installed by ./dev) for the tests, on the loopback.

One per pytest process (the `prometheus` fixture, session-scoped): it scrapes every second and
evaluates helm-values/prometheus-rules.yaml every second. Its targets are file-discovered, so a
test module adds its hub, job service and storage exporter while it runs (`Prometheus.scrape`)
without a restart. The hub's and the job service's jobs authenticate as the hub service
`prometheus` with one session token (the test hubs register that service with
jupyterhub_config.d/50-metrics.py: `hub_lines` here); the storage exporter takes no token.
`storage_exporter` runs `python -m aiinfn_hub.storage_exporter` on the loopback.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from aiinfn_dev.devcluster.processes import free_port

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "helm-values" / "prometheus-rules.yaml"
TOKEN_ENV = "AIINFN_PROMETHEUS_API_TOKEN"
# Scrape jobs: the hubs' own metrics, the job services' and the storage exporters', each at its
# path; the first two with the service token.
JOBS = {"hub": "/hub/metrics", "jobs": "/services/jobs/metrics", "storage": "/metrics"}
AUTHENTICATED = ("hub", "jobs")


@dataclass
class Prometheus:
    url: str
    token: str
    folder: Path
    process: subprocess.Popen

    def scrape(self, job: str, targets: list[str]) -> None:
        """Have `job` (a key of JOBS) scrape these host:port targets from now on (atomically)."""
        path = self.folder / f"{job}.json"
        part = path.with_suffix(".tmp")
        part.write_text(json.dumps([{"targets": targets}]))
        part.replace(path)

    def api(self, path: str, **params: str) -> dict:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as answer:
            body = json.loads(answer.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expression: str) -> list[dict]:
        """The instant vector of an expression: [{"metric": labels, "value": [t, "v"]}, ...]."""
        return self.api("query", query=expression)["result"]

    def values(self, expression: str, label: str) -> dict[str, float]:
        """An instant query's values keyed by one label."""
        return {s["metric"].get(label, ""): float(s["value"][1]) for s in self.query(expression)}

    def targets(self) -> list[dict]:
        return self.api("targets", state="active")["activeTargets"]

    def log(self) -> str:
        return (self.folder / "prometheus.log").read_text(errors="replace")


def hub_lines(token: str) -> list[str]:
    """Test-hub config lines that register the service `prometheus` with this token and its
    role, as shipped: 50-metrics.py again, after the test config replaced the lists."""
    return [
        f"import os; os.environ[{TOKEN_ENV!r}] = {token!r}",
        f"load_subconfig({str(REPO / 'jupyterhub_config.d' / '50-metrics.py')!r})",
    ]


def scrape_config(folder: Path, job: str) -> dict:
    config = {
        "job_name": job,
        "metrics_path": JOBS[job],
        "file_sd_configs": [{"files": [str(folder / f"{job}.json")], "refresh_interval": "1s"}],
    }
    if job in AUTHENTICATED:
        token_file = str(folder / "token")
        config["authorization"] = {"type": "Bearer", "credentials_file": token_file}
    return config


def config(folder: Path) -> dict:
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [scrape_config(folder, job) for job in JOBS],
    }


def start(folder: Path) -> Prometheus:
    """Start Prometheus on a free loopback port with a generated config; wait until ready."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (./dev installs Debian's package)")
    folder.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(32)
    (folder / "token").write_text(token)
    (folder / "token").chmod(0o600)
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config(folder)))
    port = free_port()
    with open(folder / "prometheus.log", "wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    prometheus = Prometheus(f"http://127.0.0.1:{port}", token, folder, process)
    for job in JOBS:
        prometheus.scrape(job, [])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited: {prometheus.log()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{prometheus.url}/-/ready", timeout=2) as answer:
                if answer.status == 200:
                    return prometheus
        except OSError:
            pass
        time.sleep(0.2)
    stop(prometheus)
    raise RuntimeError(f"prometheus did not become ready: {prometheus.log()[-3000:]}")


def stop(prometheus: Prometheus) -> None:
    """Stop it by pid: SIGTERM, then SIGKILL if it lingers."""
    _stop(prometheus.process)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


@contextlib.contextmanager
def storage_exporter(homes: Path, projects: Path, log: Path) -> Iterator[str]:
    """`python -m aiinfn_hub.storage_exporter` over these roots on a free loopback port, walking
    without a rate limit a pass a second; yields its host:port, stopped by pid at the end."""
    port = free_port()
    command = [
        sys.executable, "-m", "aiinfn_hub.storage_exporter", "--homes", str(homes),
        "--projects", str(projects), "--port", str(port), "--rate", "0", "--interval", "1",
    ]  # fmt: skip
    with open(log, "wb") as output:
        process = subprocess.Popen(
            command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 60
        while not _answers(f"http://127.0.0.1:{port}/metrics"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the storage exporter did not start: {log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        _stop(process)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory) -> Iterator[Prometheus]:
    """The pytest process's Prometheus (each xdist worker has its own)."""
    running = start(tmp_path_factory.mktemp("prometheus"))
    try:
        yield running
    finally:
        stop(running)
