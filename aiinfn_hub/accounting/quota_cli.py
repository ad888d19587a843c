"""`aiinfn-hub quota show|raise|reset`: the admins' view of GPU-hour quotas and their changes to
one subject's current period (docs/accounting.md, "Quotas").

It runs where the hub's configuration and environment are (the hub pod), reads
c.AiInfnAccounting from that configuration, and writes to quota_adjustments. Who may run it is
who may exec into the hub pod: there is no web path to it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import UTC, datetime
from typing import Any

from traitlets import TraitError

from .quotas import (
    MAX_HOURS,
    PERIODS,
    Quota,
    adjustment_key,
    applicable,
    describe,
    standings,
)
from .settings import AiInfnAccounting, libpq_url


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..services.base import HUB_CONFIG_ENV

    parser.add_argument(
        "--hub-config",
        default=os.environ.get(HUB_CONFIG_ENV) or "jupyterhub_config.py",
        help=f"the hub's configuration file (default: ${HUB_CONFIG_ENV}, else "
        "./jupyterhub_config.py)",
    )
    actions = parser.add_subparsers(dest="action", required=True)
    for action, summary in (
        ("show", "what is left of each quota of a user or a project"),
        ("raise", "add hours to a quota's current period for one user or project"),
        ("reset", "count a quota's current period again from now, for one user or project"),
    ):
        sub = actions.add_parser(action, help=summary, description=summary)
        who = sub.add_mutually_exclusive_group(required=True)
        who.add_argument("--user", help="a user's name")
        who.add_argument("--project", help="a project's catalog key")
        if action == "show":
            continue
        sub.add_argument("--model", help="the quota's accelerator (absent: all accelerators)")
        sub.add_argument("--period", choices=PERIODS, required=True, help="the quota's period")
        sub.add_argument("--by", default=os.environ.get("USER") or "admin", help="who (kept)")
        if action == "raise":
            sub.add_argument("--hours", type=float, required=True, help="hours to add")


def run(args: argparse.Namespace) -> int:
    """0 when done, 1 when refused (the reason on stderr), 2 when the configuration is bad."""
    from ..checks import ConfigLoadError, load_hub_config

    try:
        settings = AiInfnAccounting(config=load_hub_config(args.hub_config))
        quotas = _quotas(settings)
    except (ConfigLoadError, TraitError, ValueError) as error:
        print(f"aiinfn-hub quota: {error}", file=sys.stderr)
        return 2
    try:
        lines = asyncio.run(_run(args, libpq_url(settings.database_url), quotas))
    except ValueError as error:
        print(f"aiinfn-hub quota: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # psycopg's errors too; never the URL
        print(f"aiinfn-hub quota: the database did not answer ({type(error).__name__})")
        return 1
    print("\n".join(lines))
    return 0


def _quotas(settings: AiInfnAccounting) -> tuple[Quota, ...]:
    from .quotas import parse_quotas

    quotas = parse_quotas(settings.quotas)
    if not quotas:
        raise ValueError("no quota is configured (c.AiInfnAccounting.quotas)")
    return quotas


async def _run(args: argparse.Namespace, dsn: str, quotas: tuple[Quota, ...]) -> list[str]:
    import psycopg

    from . import ledger

    user, projects = (args.user, []) if args.user else ("", [args.project])
    now = datetime.now(UTC).replace(microsecond=0)
    try:
        async with await psycopg.AsyncConnection.connect(dsn, connect_timeout=10) as connection:
            if args.action != "show":
                quota = _chosen(quotas, user, projects, args)
                key = adjustment_key(quota, user or args.project, now)
                hours = args.hours if args.action == "raise" else 0.0
                if not 0 < hours <= MAX_HOURS and args.action == "raise":
                    raise ValueError(f"--hours must be more than 0, at most {MAX_HOURS:.0f}")
                reset = now if args.action == "reset" else None
                await ledger.adjust_quota(
                    connection, key, by=args.by, extra_hours=hours, reset_at=reset
                )
                await connection.commit()
            found = await standings(connection, quotas, user, projects, now)
    except psycopg.Error as error:
        raise OSError(type(error).__name__) from None
    lines = [f"{describe(s, {}, '')}: {s.remaining_hours:.1f} hours left" for s in found]
    return lines or [f"no quota applies to {user or args.project}"]


def _chosen(quotas: tuple[Quota, ...], user: str, projects: list[str], args: Any) -> Quota:
    """The quota of this subject with that model and period, or ValueError naming those that
    apply."""
    pairs = applicable(quotas, user, projects)
    for quota, _ in pairs:
        if quota.model == args.model and quota.period == args.period:
            return quota
    have = ", ".join(f"{q.model or 'all accelerators'}/{q.period}" for q, _ in pairs) or "none"
    raise ValueError(f"no such quota for that subject (its quotas: {have})")
