"""`aiinfn`: the users' command in their notebook terminal.

`aiinfn jobs submit|clone|list|status|logs|cancel|resubmit` talks to the job service, and
`aiinfn backup list|ls|restore` to the backup service, `aiinfn usage` to the usage service,
with the notebook server's own hub token ($JUPYTERHUB_API_TOKEN, which the hub lets reach the
services) at the service's URL ($AIINFN_JOBS_URL, $AIINFN_BACKUP_URL or $AIINFN_USAGE_URL, else
the hub's public address from the notebook's environment + services/jobs/, services/backup/ or
services/usage/). Submissions carry an idempotency key, so a
retry after a lost answer never makes a second job. A restore waits for its Job by default, so
the terminal says when the files are there, or why not.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .environments import cli as envs_cli

URL_ENV = "AIINFN_JOBS_URL"
TOKEN_ENV = "JUPYTERHUB_API_TOKEN"
SERVICE_PATH = "services/jobs/"
BACKUP_URL_ENV = "AIINFN_BACKUP_URL"
BACKUP_SERVICE_PATH = "services/backup/"
USAGE_URL_ENV = "AIINFN_USAGE_URL"
USER_ENV = "JUPYTERHUB_USER"
# (environment variable, path under the hub, name in messages) of each area's service.
SERVICES = {
    "jobs": (URL_ENV, SERVICE_PATH, "job service"),
    "backup": (BACKUP_URL_ENV, BACKUP_SERVICE_PATH, "backup service"),
    "usage": (USAGE_URL_ENV, "services/usage/", "usage service"),
}
RESTORE_POLL_SECONDS = 2.0
RESTORE_WAIT_SECONDS = 30 * 60
RETRIES = 3
TIMEOUT = 30
MAX_RETRY_WAIT = 30.0
MAX_FILE_BYTES = 256 * 1024


class CliError(Exception):
    """A problem to print for the user (exit status 1)."""


def service_url(env: Mapping[str, str], area: str = "jobs") -> str:
    """The area's service's base URL (ending in '/') from the notebook's environment."""
    variable, path, what = SERVICES[area]
    explicit = env.get(variable)
    if explicit:
        return explicit.rstrip("/") + "/"
    public = env.get("JUPYTERHUB_PUBLIC_HUB_URL") or env.get("JUPYTERHUB_PUBLIC_URL")
    if public:
        parts = urllib.parse.urlsplit(public)
        base = (env.get("JUPYTERHUB_BASE_URL") or "/").rstrip("/") + "/"
        return f"{parts.scheme}://{parts.netloc}{base}{path}"
    raise CliError(
        f"cannot tell where the {what} is: set {variable} (your admins know it), or run this "
        "in a notebook terminal of a hub with a public URL"
    )


def default_name(command: list[str]) -> str:
    """A listing name from the command: the script it runs, else the program."""
    scripts = [a for a in command if re.search(r"\.(py|sh|jl|R)$", a)]
    stem = Path(scripts[0] if scripts else command[0]).stem if command else "job"
    name = re.sub(r"[^a-z0-9-]+", "-", stem.lower()).strip("-")[:40].strip("-")
    return name or "job"


class Client:
    """A service's REST API with the user's hub token."""

    def __init__(self, url: str, token: str, what: str = "job service") -> None:
        self.url = url
        self.token = token
        self.what = what

    def call(
        self, method: str, path: str, body: Any = None, retry: bool = False, text: bool = False
    ) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            urllib.parse.urljoin(self.url, path),
            data=data,
            method=method,
            headers={
                "Authorization": f"token {self.token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        for attempt in range(RETRIES if retry else 1):
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                    raw = response.read()
                    return raw.decode() if text else json.loads(raw or b"{}")
            except urllib.error.HTTPError as error:
                message = _message(error)
                if retry and error.code in (429, 502, 503, 504) and attempt + 1 < RETRIES:
                    time.sleep(retry_wait(error.headers.get("Retry-After"), attempt))
                    continue
                raise CliError(f"{message} (HTTP {error.code})") from None
            except (urllib.error.URLError, OSError) as error:
                if retry and attempt + 1 < RETRIES:
                    time.sleep(1 + attempt)
                    continue
                raise CliError(f"cannot reach the {self.what} at {self.url}: {error}") from None
        raise AssertionError("unreachable")


def retry_wait(retry_after: str | None, attempt: int) -> float:
    """Seconds before trying again: the service's Retry-After (whole seconds) up to
    MAX_RETRY_WAIT, else 1 s more each attempt."""
    try:
        return min(max(float(retry_after or ""), 0.0), MAX_RETRY_WAIT)
    except ValueError:
        return 1.0 + attempt


def _message(error: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(error.read()).get("message"))
    except (ValueError, AttributeError):
        return error.reason or "error"


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
    if clone:
        body["server"] = args.server
        body["working_dir"] = args.workdir or os.getcwd()
    else:
        if args.environment:
            body["environment"] = home_relative(args.environment, os.environ.get("HOME", ""))
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


def _show(result: Any, args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(result, indent=2))
    elif args.area == "backup":
        _show_backup(result, args.action)
    elif args.area == "usage":
        _show_usage(result)
    else:
        _show_jobs(result, args.action)


def _show_jobs(result: Any, action: str) -> None:
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


def _entry_line(entry: Mapping[str, Any]) -> str:
    """An archive's entry as `ls -l` shows it: mode, size, time, path (a link's target)."""
    path = entry["path"] + ("/" if entry["type"] == "folder" else "")
    if entry.get("link_target") is not None:
        path += f" -> {entry['link_target']}"
    return f"{entry['mode']} {entry['size']:>12} {entry['mtime']}  {path}"


def _bytes(count: int) -> str:
    """Bytes as people read them: 1023 B, 1.5 KiB, 2.0 GiB."""
    size, unit = float(count), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"


def _archive_line(archive: Mapping[str, Any]) -> str:
    """An archive's name, time and sizes (original, compressed, deduplicated: what only it
    holds), the sizes when the service gives them."""
    line = f"{archive['name']}  {archive['time']}"
    sizes = [archive.get(f"{kind}_size") for kind in ("original", "compressed", "deduplicated")]
    if all(isinstance(size, int) for size in sizes):
        original, compressed, unique = (_bytes(size) for size in sizes)
        line += f"  {original} original, {compressed} compressed, {unique} only in it"
    return line


def _run_line(run: Mapping[str, Any]) -> str:
    where = f" into {run['destination']}" if run.get("destination") else ""
    return (
        f"{run['id']}  {run.get('kind', 'restore')} of {run.get('archive') or '-'}{where}: "
        + (run["state"])
    )


def _show_backup(result: Any, action: str) -> None:
    if action == "list":
        for archive in result["archives"]:
            print(_archive_line(archive))
        if not result["archives"]:
            print("no archives yet")
    elif action == "ls":
        for entry in result["entries"]:
            print(_entry_line(entry))
        if not result["entries"]:
            print("nothing in this folder of the archive")
    else:
        print(_run_line(result))
        if result.get("message"):
            print(f"  {result['message']}")
        elif action == "restore" and result["state"] == "running":
            print(f"  see how it goes: aiinfn backup status {result['id']}")


def _show_usage(result: Any) -> None:
    """Totals over the range per (model, project, kind, site), then what is left of each
    quota; CSV as the service wrote it."""
    if isinstance(result, str):
        print(result, end="")
        return
    whose = "everyone's" if result["all"] else f"{result['user']}'s"
    print(f"{whose} usage, {result['start']} to {result['end']} (UTC days)")
    for t in result["totals"]:
        what = " ".join(
            [t["model"] or "cpu-only", t["project"] or "-", t["kind"], t["site"] or "local"]
        )
        who = f"{t['user']}: " if result["all"] else ""
        hours = f"{t['accelerator_hours']:.2f} accelerator-h, {t['cpu_hours']:.2f} CPU-h"
        print(f"  {who}{what}: {hours}")
    if not result["totals"]:
        print("  nothing in this range")
    for q in result["quotas"]:
        print(
            f"quota on {q['scope']} {q['subject']}, {q['model'] or 'every accelerator'}, "
            f"this {q['period']}: {q['remaining_hours']:.2f} of {q['limit_hours']:g} h left "
            f"(resets {q['period_end'][:16].replace('T', ' ')} UTC)"
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
        "--key", help="idempotency key (default: a new one; reuse it to retry safely)"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- program and arguments")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="aiinfn", description="aiinfn-hub from your notebook terminal"
    )
    top.add_argument(
        "--url",
        help=f"the service's URL (default: ${URL_ENV} for jobs, ${BACKUP_URL_ENV} for backup, "
        f"${USAGE_URL_ENV} for usage, else the hub's public URL)",
    )
    top.add_argument("--json", action="store_true", help="print the service's JSON answers")
    areas = top.add_subparsers(dest="area", required=True)
    jobs = areas.add_parser("jobs", help="batch jobs and Bunshin clones of your notebook")
    actions = jobs.add_subparsers(dest="action", required=True)
    submit = actions.add_parser("submit", help="run a command in a catalog environment")
    _job_options(submit)
    submit.add_argument(
        "--environment",
        help="catalog environment key, or envs/NAME or ~/envs/NAME (see: aiinfn envs list)",
    )
    clone = actions.add_parser("clone", help="run a command in a copy of your running notebook")
    _job_options(clone)
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
    _backup_parser(areas)
    _usage_parser(areas)
    envs_cli.add_parser(areas)
    return top


def _usage_parser(areas: Any) -> None:
    usage = areas.add_parser("usage", help="your GPU-hours and CPU-hours, and quotas left")
    usage.set_defaults(action="show")
    usage.add_argument("--start", help="first UTC day, YYYY-MM-DD (default: 29 days before end)")
    usage.add_argument("--end", help="last UTC day, YYYY-MM-DD (default: today)")
    usage.add_argument("--project", help="only the usage in this project")
    usage.add_argument("--csv", action="store_true", help="print every day's figures as CSV")
    whose = usage.add_mutually_exclusive_group()
    whose.add_argument("--user", help="admins: this user's usage instead of yours")
    whose.add_argument("--all", action="store_true", help="admins: every user's usage")


def _backup_parser(areas: Any) -> None:
    backup = areas.add_parser("backup", help="your backups: list, browse and restore files")
    actions = backup.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="the archives of your home (or a project's)")
    browse = actions.add_parser("ls", help="what a folder of an archive holds")
    browse.add_argument("archive", help="an archive's name, as `aiinfn backup list` shows it")
    browse.add_argument("path", nargs="?", default="", help="a folder in it (default: the top)")
    restore = actions.add_parser(
        "restore", help="restore a file or folder into ~/restored/<archive>/ (never overwriting)"
    )
    restore.add_argument("archive", help="an archive's name, as `aiinfn backup list` shows it")
    restore.add_argument("path", nargs="?", default="", help="what to restore (default: all)")
    restore.add_argument(
        "--folder", help="admins: restore into this folder of the home or project instead"
    )
    restore.add_argument(
        "--no-wait", action="store_true", help="return once started, without waiting for it"
    )
    for action in (listing, browse, restore):
        whose = action.add_mutually_exclusive_group()
        whose.add_argument("--project", help="a project's folder instead of your home")
        whose.add_argument("--user", help="admins: this user's home instead of yours")
    status = actions.add_parser("status", help="a restore's or backup's state")
    status.add_argument("id")


def run(args: argparse.Namespace, env: Mapping[str, str]) -> Any:
    token = env.get(TOKEN_ENV)
    if not token:
        raise CliError(f"no hub token: ${TOKEN_ENV} is set in notebook terminals; run this there")
    url = args.url.rstrip("/") + "/" if args.url else service_url(env, args.area)
    client = Client(url, token, SERVICES[args.area][2])
    if args.area == "backup":
        return run_backup(args, env, client)
    if args.area == "usage":
        return client.call("GET", usage_path(args), retry=True, text=args.csv)
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


def usage_path(args: argparse.Namespace) -> str:
    """The usage API's path and query for `aiinfn usage` (the service checks every value)."""
    asked = {k: getattr(args, k) for k in ("start", "end", "user", "project") if getattr(args, k)}
    if args.all:
        asked["all"] = "1"
    return ("api/usage.csv?" if args.csv else "api/usage?") + urllib.parse.urlencode(asked)


def _quoted(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def repository(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[str, str]:
    """(kind, name) of the repository the command names: a project's, another user's home
    (admins; the service decides), else the caller's own home."""
    if args.project:
        return "project", args.project
    name = args.user or env.get(USER_ENV)
    if not name:
        raise CliError(f"cannot tell whose home: ${USER_ENV} is set in notebook terminals")
    return "home", name


def run_backup(args: argparse.Namespace, env: Mapping[str, str], client: Client) -> Any:
    if args.action == "status":
        return client.call("GET", f"api/runs/{_quoted(args.id)}", retry=True)
    kind, name = repository(args, env)
    archives = f"api/repositories/{kind}/{_quoted(name)}/archives"
    if args.action == "list":
        return client.call("GET", archives, retry=True)
    if args.action == "ls":
        query = "?" + urllib.parse.urlencode({"folder": args.path}) if args.path else ""
        return client.call("GET", f"{archives}/{_quoted(args.archive)}/paths{query}", retry=True)
    body: dict[str, Any] = {"kind": kind, "name": name, "archive": args.archive, "path": args.path}
    if args.folder is not None:
        body["folder"] = args.folder
    # Never retried: a second restore of a lost answer would only be refused (never overwriting).
    run = client.call("POST", "api/restores", body)
    return run if args.no_wait else wait_for_run(client, run)


def wait_for_run(client: Client, run: dict[str, Any]) -> dict[str, Any]:
    """The run once it is no longer running; a refused or failed one is the user's error."""
    print(f"restoring into {run.get('destination')} ({run['id']})...", file=sys.stderr)
    deadline = time.monotonic() + RESTORE_WAIT_SECONDS
    while run["state"] == "running":
        if time.monotonic() > deadline:
            raise CliError(
                f"{run['id']} is still running; see how it goes: aiinfn backup status {run['id']}"
            )
        time.sleep(RESTORE_POLL_SECONDS)
        run = client.call("GET", f"api/runs/{_quoted(run['id'])}", retry=True)
    if run["state"] != "succeeded":
        raise CliError(run.get("message") or f"{run['id']}: {run['state']}")
    return run


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.area == "envs":
        return envs_cli.main(args)
    try:
        _show(run(args, os.environ), args)
    except CliError as error:
        print(f"aiinfn: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
