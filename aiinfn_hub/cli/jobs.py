"""`aiinfn jobs submit|clone|list|status|logs|cancel|resubmit`: the job service from a notebook
terminal. Submissions carry an idempotency key, so a retry after a lost answer never makes a
second job; the service checks every field."""

from __future__ import annotations

import argparse
import os
import re
import urllib.parse
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .client import Client, CliError

MAX_FILE_BYTES = 256 * 1024


def default_name(command: list[str]) -> str:
    """A listing name from the command: the script it runs, else the program."""
    scripts = [a for a in command if re.search(r"\.(py|sh|jl|R)$", a)]
    stem = Path(scripts[0] if scripts else command[0]).stem if command else "job"
    name = re.sub(r"[^a-z0-9-]+", "-", stem.lower()).strip("-")[:40].strip("-")
    return name or "job"


def _read(path: str) -> str:
    file = Path(path)
    try:
        if file.stat().st_size > MAX_FILE_BYTES:
            raise CliError(
                f"{path} is larger than {MAX_FILE_BYTES // 1024} KiB; "
                "put it on a shared volume instead"
            )
        return file.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise CliError(f"cannot read {path}: {error}") from None


def home_relative(environment: str, home: str) -> str:
    """`~/envs/NAME` as the service expects it, also when the shell expanded the ~ (an
    unquoted `--environment ~/envs/mine` arrives as $HOME/envs/mine)."""
    if home and environment.startswith(f"{home.rstrip('/')}/envs/"):
        return "~" + environment[len(home.rstrip("/")) :]
    return environment


def request_body(args: argparse.Namespace, clone: bool) -> dict[str, Any]:
    """The JSON request from the command line; the service checks everything."""
    command = list(args.command or [])
    if command and command[0] == "--":
        command = command[1:]
    if not command and not args.script:
        raise CliError(
            "give the command to run after --, e.g. aiinfn jobs submit -- python train.py"
        )
    body: dict[str, Any] = {
        "name": args.name or default_name(command or [args.script]),
        "idempotency_key": args.key or uuid.uuid4().hex,
    }
    if args.script:
        body["script"] = _read(args.script)
        if command:
            raise CliError("give either --script or a command, not both")
    else:
        body["command"] = command
    for field in (
        "accelerator",
        "count",
        "cpu",
        "memory",
        "completions",
        "parallelism",
        "project",
        "priority",
        "retries",
    ):
        if getattr(args, field) is not None:
            body[field] = getattr(args, field)
    if args.offloadable:
        body["offloadable"] = True
    if args.offload is not None:
        body["offload"] = args.offload
    if args.confidential:
        body["confidential"] = True
    if args.volume:
        body["volumes"] = args.volume
    if args.setenv:
        body["env"] = dict(_pair(item) for item in args.setenv)
    if args.file:
        body["files"] = {Path(path).name: _read(path) for path in args.file}
    if args.deadline is not None:
        body["deadline_seconds"] = args.deadline
    if args.ttl is not None:
        body["ttl_seconds"] = args.ttl
    if args.environment:
        body["environment"] = home_relative(args.environment, os.environ.get("HOME", ""))
    if clone:
        body["server"] = args.server
        body["working_dir"] = args.workdir or os.getcwd()
    else:
        if args.image:
            body["image"] = args.image
        if args.workdir:
            body["working_dir"] = args.workdir
    return body


def _pair(item: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep:
        raise CliError(f"--setenv takes NAME=VALUE, not {item!r}")
    return name, value


def _line(job: Mapping[str, Any]) -> str:
    where = f"#{job['position']} in queue" if job.get("position") else ""
    if job.get("admission") and job["admission"].get("flavors"):
        where = "on " + ",".join(sorted(set(job["admission"]["flavors"].values())))
        if job.get("site") and job["site"] != "local":
            where += " (remote site)"
    return (
        f"{job['id']}  {job.get('name') or '':<20} {job.get('kind') or '':<8} "
        f"{job.get('project') or '':<16} "
        f"{job['state']:<10} {job.get('succeeded', 0)}/{job.get('completions') or 0} {where}"
    ).rstrip()


def show(result: Any, action: str) -> None:
    if action == "list":
        for job in result["jobs"]:
            print(_line(job))
        if not result["jobs"]:
            print("no jobs")
    elif action == "logs":
        for pod in result["pods"]:
            print(
                f"==> {pod['pod']} (index {pod['index']}, {pod['phase']})"
                + (f": {pod['error']}" if pod.get("error") else "")
            )
            print(pod["log"], end="" if pod["log"].endswith("\n") or not pod["log"] else "\n")
    else:
        print(_line(result))
        if result.get("message"):
            print(f"  {result['message']}")
        for pod in result.get("pods") or ():
            print(
                f"  pod {pod['name']} index {pod['index']} {pod['phase']} on {pod['node'] or '-'}"
                + (" (remote site)" if pod.get("site") not in (None, "local") else "")
            )


def _job_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", help="short name shown in listings (default: from the command)")
    parser.add_argument(
        "--accelerator", help="catalog accelerator key, e.g. t4, a100, a100-mig-1g-10gb"
    )
    parser.add_argument("--count", type=int, help="accelerator units per pod")
    parser.add_argument("--cpu", help='CPU per pod, e.g. "4"')
    parser.add_argument("--memory", help='memory per pod, e.g. "16Gi"')
    parser.add_argument(
        "--completions", type=int, help="pods that must succeed (each gets JOB_COMPLETION_INDEX)"
    )
    parser.add_argument("--parallelism", type=int, help="pods at once")
    parser.add_argument("--project", help="one of your projects (picks the queue)")
    parser.add_argument("--priority", help="low, normal or high (as your platform offers)")
    parser.add_argument(
        "--offload",
        choices=("never", "may", "only"),
        help="run at a remote site: may (when the project's local accelerators are taken) or "
        "only; such jobs mount no NFS volumes (default: never)",
    )
    parser.add_argument("--offloadable", action="store_true", help="the same as --offload may")
    parser.add_argument(
        "--confidential",
        action="store_true",
        help="the job handles confidential data: it stays on local nodes (--offload may is "
        "ignored, --offload only refused)",
    )
    parser.add_argument(
        "--volume",
        action="append",
        choices=["home", "projects", "scratch", "juicefs"],
        help="a volume of yours to mount (repeat); default: home and projects",
    )
    parser.add_argument(
        "--setenv", action="append", metavar="NAME=VALUE", help="environment variable (repeat)"
    )
    parser.add_argument(
        "--file", action="append", metavar="PATH", help="small file for the job's sandbox (repeat)"
    )
    parser.add_argument(
        "--script", metavar="PATH", help="run this script (starting with #!) instead of a command"
    )
    parser.add_argument("--workdir", help="working directory in the container")
    parser.add_argument(
        "--deadline", type=int, metavar="SECONDS", help="stop the job after this long"
    )
    parser.add_argument(
        "--ttl", type=int, metavar="SECONDS", help="delete the finished job after this long"
    )
    parser.add_argument(
        "--retries",
        type=int,
        metavar="N",
        help="failed pods the job survives (0: fail at the first; default: the platform's)",
    )
    parser.add_argument(
        "--key", help="idempotency key (default: a new one; reuse it to retry safely)"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- program and arguments")


def add_parser(areas: Any) -> None:
    jobs = areas.add_parser("jobs", help="batch jobs and Bunshin clones of your notebook")
    actions = jobs.add_subparsers(dest="action", required=True)
    submit = actions.add_parser("submit", help="run a command in a catalog environment")
    _job_options(submit)
    submit.add_argument(
        "--environment",
        help="catalog environment key, or envs/NAME or ~/envs/NAME (see: aiinfn envs list)",
    )
    submit.add_argument(
        "--image",
        help="a custom image instead of an environment (if your groups may use custom images "
        "and the platform allows this one)",
    )
    clone = actions.add_parser("clone", help="run a command in a copy of your running notebook")
    _job_options(clone)
    clone.add_argument(
        "--environment",
        help="envs/NAME or ~/envs/NAME, activated in the notebook's image (see: aiinfn envs list)",
    )
    clone.add_argument(
        "--server",
        default=os.environ.get("JUPYTERHUB_SERVER_NAME", ""),
        help="which of your servers to clone (default: this one)",
    )
    listing = actions.add_parser("list", help="your jobs")
    listing.add_argument("--all", action="store_true", help="everyone's (admins)")
    for name, text in (
        ("status", "a job's state, queue position and pods"),
        ("cancel", "cancel a job"),
    ):
        actions.add_parser(name, help=text).add_argument("id")
    logs = actions.add_parser("logs", help="the last lines of a job's pod logs")
    logs.add_argument("id")
    logs.add_argument("--index", type=int, help="only the pod of this completion index")
    logs.add_argument("--tail", type=int, default=200, help="lines per pod (default 200)")
    resubmit = actions.add_parser("resubmit", help="submit one of your jobs again")
    resubmit.add_argument("id")
    resubmit.add_argument("--key", help="idempotency key of the new submission")


def run(args: argparse.Namespace, env: Mapping[str, str], client: Client) -> Any:
    job = urllib.parse.quote(getattr(args, "id", "") or "", safe="")
    if args.action in ("submit", "clone"):
        path = "api/jobs" if args.action == "submit" else "api/clones"
        return client.call(
            "POST", path, request_body(args, clone=args.action == "clone"), retry=True
        )
    if args.action == "list":
        return client.call("GET", "api/jobs" + ("?all=1" if args.all else ""))
    if args.action == "status":
        return client.call("GET", f"api/jobs/{job}")
    if args.action == "cancel":
        return client.call("DELETE", f"api/jobs/{job}")
    if args.action == "logs":
        query = urllib.parse.urlencode(
            {"tail": args.tail, **({"index": args.index} if args.index is not None else {})}
        )
        return client.call("GET", f"api/jobs/{job}/logs?{query}")
    key = args.key or uuid.uuid4().hex
    return client.call("POST", f"api/jobs/{job}/resubmit", {"idempotency_key": key}, retry=True)
