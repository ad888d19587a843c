"""`aiinfn backup list|ls|restore|status`: the backup service from a notebook terminal. A restore
waits for its Job by default, so the terminal says when the files are there, or why not."""

from __future__ import annotations

import argparse
import sys
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

from .client import USER_ENV, Client, CliError

RESTORE_POLL_SECONDS = 2.0
RESTORE_WAIT_SECONDS = 30 * 60


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
    known = [size for size in sizes if isinstance(size, int)]
    if len(known) == len(sizes):
        original, compressed, unique = (_bytes(size) for size in known)
        line += f"  {original} original, {compressed} compressed, {unique} only in it"
    return line


def _run_line(run: Mapping[str, Any]) -> str:
    where = f" into {run['destination']}" if run.get("destination") else ""
    return (
        f"{run['id']}  {run.get('kind', 'restore')} of {run.get('archive') or '-'}{where}: "
        + (run["state"])
    )


def show(result: Any, action: str) -> None:
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


def add_parser(areas: Any) -> None:
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


def run(args: argparse.Namespace, env: Mapping[str, str], client: Client) -> Any:
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
    started = client.call("POST", "api/restores", body)
    return started if args.no_wait else wait_for_run(client, started)


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
