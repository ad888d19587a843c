"""A real Prometheus (Debian's package, installed by ./dev) on the loopback: the tests'
(tests/prometheus.py) and the demo's; and the storage exporter beside it.

It scrapes and evaluates helm-values/prometheus-rules.yaml every `interval`. Its targets are
file-discovered, so the hub, its services and the storage exporter are added while it runs
(`Prometheus.scrape`) without a restart. The hub's and its services' jobs authenticate as the
hub service `prometheus` with one token (a hub registers that service with
jupyterhub_config.d/50-metrics.py when AIINFN_PROMETHEUS_API_TOKEN is set); the storage
exporter takes none. Everything is stopped by pid.
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
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .devcluster.processes import free_port

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "helm-values" / "prometheus-rules.yaml"
TOKEN_ENV = "AIINFN_PROMETHEUS_API_TOKEN"
# Scrape jobs: the hub's own metrics, the job service's and the storage exporter's, each at its
# path; the hub's services' with the service token.
JOBS = {"hub": "/hub/metrics", "jobs": "/services/jobs/metrics", "storage": "/metrics"}
SERVICE_JOBS = {"jobs": "/services/jobs/metrics", "backup": "/services/backup/metrics"}
UNAUTHENTICATED = ("storage", "dcgm")


class Unavailable(RuntimeError):
    """Prometheus is not installed here."""


@dataclass
class Prometheus:
    url: str
    token: str
    folder: Path
    process: subprocess.Popen

    def scrape(self, job: str, targets: list[str]) -> None:
        """Have `job` scrape these host:port targets from now on (atomically)."""
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


def scrape_config(folder: Path, job: str, path: str) -> dict[str, Any]:
    config: dict[str, Any] = {
        "job_name": job,
        "metrics_path": path,
        "file_sd_configs": [{"files": [str(folder / f"{job}.json")], "refresh_interval": "1s"}],
    }
    if job not in UNAUTHENTICATED:
        token_file = str(folder / "token")
        config["authorization"] = {"type": "Bearer", "credentials_file": token_file}
    return config


def config(folder: Path, jobs: Mapping[str, str], rules: Path, interval: str) -> dict:
    timing = {"scrape_interval": interval, "evaluation_interval": interval}
    return {
        "global": {**timing, "scrape_timeout": interval},
        "rule_files": [str(rules)],
        "scrape_configs": [scrape_config(folder, job, path) for job, path in jobs.items()],
    }


def start(
    folder: Path,
    jobs: Mapping[str, str] = JOBS,
    rules: Path = RULES,
    interval: str = "1s",
    token: str | None = None,
) -> Prometheus:
    """Start Prometheus on a free loopback port with a generated config; wait until ready."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise Unavailable("prometheus is not installed (./dev installs Debian's package)")
    folder.mkdir(parents=True, exist_ok=True)
    token = token or secrets.token_hex(32)
    (folder / "token").write_text(token)
    (folder / "token").chmod(0o600)
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config(folder, jobs, rules, interval)))
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
    for job in jobs:
        prometheus.scrape(job, [])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited: {prometheus.log()[-3000:]}")
        if _answers(f"{prometheus.url}/-/ready"):
            return prometheus
        time.sleep(0.2)
    stop(prometheus)
    raise RuntimeError(f"prometheus did not become ready: {prometheus.log()[-3000:]}")


def stop(prometheus: Prometheus) -> None:
    """Stop it by pid: SIGTERM, then SIGKILL if it lingers."""
    stop_process(prometheus.process)


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


@contextlib.contextmanager
def storage_exporter(
    homes: Path, projects: Path, log: Path, rate: int = 0, interval: int = 1
) -> Iterator[str]:
    """`python -m aiinfn_hub.storage_exporter` over these roots on a free loopback port (by
    default walking without a rate limit a pass a second); yields its host:port, stopped by
    pid at the end."""
    port = free_port()
    command = [
        sys.executable, "-m", "aiinfn_hub.storage_exporter", "--homes", str(homes),
        "--projects", str(projects), "--port", str(port), "--rate", str(rate),
        "--interval", str(interval),
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
        stop_process(process)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False
