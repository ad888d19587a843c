"""`aiinfn usage`: the usage service's GPU-hours, CPU-hours and quotas from a notebook terminal."""

from __future__ import annotations

import argparse
import urllib.parse
from collections.abc import Mapping
from typing import Any

from .client import Client


def show(result: Any, action: str) -> None:
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


def add_parser(areas: Any) -> None:
    usage = areas.add_parser("usage", help="your GPU-hours and CPU-hours, and quotas left")
    usage.set_defaults(action="show")
    usage.add_argument("--start", help="first UTC day, YYYY-MM-DD (default: 29 days before end)")
    usage.add_argument("--end", help="last UTC day, YYYY-MM-DD (default: today)")
    usage.add_argument("--project", help="only the usage in this project")
    usage.add_argument("--csv", action="store_true", help="print every day's figures as CSV")
    whose = usage.add_mutually_exclusive_group()
    whose.add_argument("--user", help="admins: this user's usage instead of yours")
    whose.add_argument("--all", action="store_true", help="admins: every user's usage")


def usage_path(args: argparse.Namespace) -> str:
    """The usage API's path and query for `aiinfn usage` (the service checks every value)."""
    asked = {k: getattr(args, k) for k in ("start", "end", "user", "project") if getattr(args, k)}
    if args.all:
        asked["all"] = "1"
    return ("api/usage.csv?" if args.csv else "api/usage?") + urllib.parse.urlencode(asked)


def run(args: argparse.Namespace, env: Mapping[str, str], client: Client) -> Any:
    return client.call("GET", usage_path(args), retry=True, text=args.csv)
