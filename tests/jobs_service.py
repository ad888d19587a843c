"""The job service as a process beside a test hub: registered as an external service (so a test
can kill and restart it by pid), started with the environment a hub gives a managed service.
Used by the integration tests and the benchmark."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiinfn_dev import kueue_config
from kubernetes_asyncio import client

from tests import service_process
from tests.hub import Hub

PREFIX = "/services/jobs/"


def submit_through_hub(hub: Hub, token: str, body: dict, timeout: float = 60) -> tuple[int, dict]:
    """POST api/jobs through the hub's proxy with a user's token, as the `aiinfn` command does:
    (status, JSON answer, {} when there is none); (0, {}) when the connection died."""
    request = urllib.request.Request(
        f"{hub.url}{PREFIX}api/jobs",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"token {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        try:
            return error.code, json.loads(error.read() or b"{}")
        except ValueError:
            return error.code, {}
    except (urllib.error.URLError, ConnectionError):
        return 0, {}


async def pods_ready_in_kueue(api_client: Any, namespace: str, job_id: str) -> bool:
    """The job's Workload has Kueue's PodsReady condition True. Kueue sets it a moment after the
    Job's pods run; a job stopped before that waits waitForPodsReady's first-start timeout
    (30 min) to be requeued instead of the recovery timeout."""
    custom = client.CustomObjectsApi(api_client)
    workloads = await custom.list_namespaced_custom_object(
        kueue_config.API_GROUP, kueue_config.API_VERSION, namespace, "workloads"
    )
    for workload in workloads["items"]:
        owners = workload["metadata"].get("ownerReferences") or []
        if any(o["kind"] == "Job" and o["name"] == job_id for o in owners):
            conditions = workload.get("status", {}).get("conditions", [])
            return any(c["type"] == "PodsReady" and c["status"] == "True" for c in conditions)
    return False


def run_long_then_short(marker: str) -> list[str]:
    """A job command that marks its first attempt in the home folder: long the first time, and
    deaf to SIGTERM then (it is stopped after its grace, which leaves a spawn's progress time to
    say so); short after, so a requeued job completes soon once it runs again."""
    return [
        "python",
        "-c",
        f"import pathlib, signal, time; mark = pathlib.Path('/home/jovyan/{marker}'); "
        "first = not mark.exists(); mark.touch(); "
        "first and signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300 if first else 2)",
    ]


def hub_lines(port: int, token: str, **settings: object) -> list[str]:
    """Hub config lines: the job service as an external service, the roles 40-jobs.py gives,
    and these c.AiInfnJobs settings."""
    return [
        *service_process.external_service_lines("jobs", port, token),
        *(f"c.AiInfnJobs.{name} = {value!r}" for name, value in settings.items()),
    ]


@dataclass
class Service:
    """The job service process, started, stopped and killed by pid. Its Kubernetes account is
    the hub's unless `kubeconfig` says otherwise (in z2jh it runs in the hub pod)."""

    tmp: Path
    hub: Hub
    port: int
    token: str
    kubeconfig: Path | None = None
    process: subprocess.Popen | None = None
    starts: int = 0

    def __post_init__(self) -> None:
        self.kubeconfig = self.kubeconfig or self.hub.kubeconfig

    def environment(self, kubeconfig: Path | None = None) -> dict[str, str]:
        """What a hub gives a managed service, pointing at this hub and this port."""
        kubeconfig_path = str(kubeconfig or self.kubeconfig)
        return service_process.environment(
            "jobs", self.token, self.hub.url, self.port, PREFIX, KUBECONFIG=kubeconfig_path
        )

    def argv(self, *args: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "aiinfn_hub.services.jobs",
            "--hub-config",
            str(self.tmp / "jupyterhub_config.py"),
            *args,
        ]

    def answers(self) -> bool:
        return service_process.answers(self.port, PREFIX)

    def start(self, kubeconfig: Path | None = None, *args: str) -> None:
        """Start the process and wait until it answers; `args` are extra command-line settings."""
        self.starts += 1
        log = self.tmp / f"jobs-{self.starts}.log"
        env = self.environment(kubeconfig)
        self.process = service_process.start(
            self.argv(*args), self.tmp, env, log, self.port, PREFIX
        )

    def stop(self, how: int = signal.SIGTERM) -> int:
        return service_process.stop(self.process, how)

    def log(self) -> str:
        return (self.tmp / f"jobs-{self.starts}.log").read_text(errors="replace")
