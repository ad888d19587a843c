"""One of our hub services as a test process: the hub config lines that register it as an
external service, the environment a hub gives a managed service, a start that waits until it
answers, a stop by pid. The job, backup and usage service fixtures
(tests/jobs_service.py, tests/backup_cluster.py, tests/accounting/test_usage_service.py) keep
their own settings and use these."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import urllib.request
from collections.abc import Sequence
from pathlib import Path

START_POLLS = 300  # 30 s


def external_service_lines(name: str, port: int, token: str) -> list[str]:
    """Hub config lines: service `name` as an external service at this loopback port with this
    token (so a test can kill and restart it by pid), and the `user` role line that lets users
    reach it, as the repository's jupyterhub_config.d does for the managed one."""
    service = {
        "name": name,
        "url": f"http://127.0.0.1:{port}",
        "api_token": token,
        "oauth_no_confirm": True,
        "oauth_client_allowed_scopes": [],
    }
    return [
        "c.JupyterHub.public_url = c.JupyterHub.bind_url",
        f"c.JupyterHub.services.append({service!r})",
        "c.JupyterHub.load_roles.append("
        f"{{'name': 'user', 'scopes': ['self', 'access:services!service={name}']}})",
    ]


def environment(
    service: str,
    token: str,
    hub_url: str,
    port: int,
    prefix: str,
    drop: tuple[str, ...] = ("JUPYTERHUB_",),
    **extra: str,
) -> dict[str, str]:
    """This process's environment less the variables starting with `drop`, plus what JupyterHub
    gives the managed service `service` listening on `port` behind `prefix`, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(
        {
            "JUPYTERHUB_API_TOKEN": token,
            "JUPYTERHUB_API_URL": f"{hub_url}/hub/api",
            "JUPYTERHUB_CLIENT_ID": f"service-{service}",
            "JUPYTERHUB_SERVICE_NAME": service,
            "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}",
            "JUPYTERHUB_SERVICE_PREFIX": prefix,
            "JUPYTERHUB_OAUTH_CALLBACK_URL": f"{prefix}oauth_callback",
            "JUPYTERHUB_BASE_URL": "/",
            "JUPYTERHUB_OAUTH_ACCESS_SCOPES": json.dumps(
                ["access:services", f"access:services!service={service}"]
            ),
            **extra,
        }
    )
    return env


def answers(port: int, prefix: str) -> bool:
    """Whether the service serves its (public) OpenAPI document."""
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}{prefix}api/openapi.json", timeout=2).read()
        return True
    except OSError:
        return False


def start(
    argv: Sequence[str], cwd: Path, env: dict[str, str], log: Path, port: int, prefix: str
) -> subprocess.Popen:
    """Start the service (its output in `log`) and wait until it answers; its log's tail in the
    error when it exits or does not answer."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    for _ in range(START_POLLS):
        if process.poll() is not None:
            raise RuntimeError(f"{argv[2]} exited: {log.read_text(errors='replace')[-3000:]}")
        if answers(port, prefix):
            return process
        threading.Event().wait(0.1)
    stop(process)
    raise RuntimeError(f"{argv[2]} did not start: {log.read_text(errors='replace')[-3000:]}")


def stop(process: subprocess.Popen | None, how: int = signal.SIGTERM) -> int:
    """Stop it by pid (`how`, then SIGKILL after 20 s); its exit status."""
    if process is None:
        return 0
    if process.poll() is not None:
        return process.returncode
    os.kill(process.pid, how)
    try:
        return process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        return process.wait()
