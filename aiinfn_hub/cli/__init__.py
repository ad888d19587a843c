"""`aiinfn`: the users' command in their notebook terminal.

`aiinfn jobs ...` talks to the job service (jobs.py), `aiinfn backup ...` to the backup service
(backup.py), `aiinfn usage` to the usage service (usage.py), each with the notebook server's own
hub token ($JUPYTERHUB_API_TOKEN, which the hub lets reach the services) at the service's URL
(client.py: $AIINFN_JOBS_URL, $AIINFN_BACKUP_URL or $AIINFN_USAGE_URL, else the hub's public
address from the notebook's environment). `aiinfn envs ...` works on the environments' folders
themselves (aiinfn_hub/environments/cli.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from typing import Any

from ..environments import cli as envs_cli
from . import backup, jobs, usage
from .client import (
    BACKUP_URL_ENV,
    SERVICES,
    TOKEN_ENV,
    URL_ENV,
    USAGE_URL_ENV,
    Client,
    CliError,
    service_url,
)

AREAS = {"jobs": jobs, "backup": backup, "usage": usage}


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
    for area in AREAS.values():
        area.add_parser(areas)
    envs_cli.add_parser(areas)
    return top


def run(args: argparse.Namespace, env: Mapping[str, str]) -> Any:
    """The service's answer to the command (a service area's, not `envs`)."""
    token = env.get(TOKEN_ENV)
    if not token:
        raise CliError(f"no hub token: ${TOKEN_ENV} is set in notebook terminals; run this there")
    url = args.url.rstrip("/") + "/" if args.url else service_url(env, args.area)
    client = Client(url, token, SERVICES[args.area][2])
    return AREAS[args.area].run(args, env, client)


def show(result: Any, args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        AREAS[args.area].show(result, args.action)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.area == "envs":
        return envs_cli.main(args)
    try:
        show(run(args, os.environ), args)
    except CliError as error:
        print(f"aiinfn: {error}", file=sys.stderr)
        return 1
    return 0
