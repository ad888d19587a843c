"""The hub-process-wide platform state the spawners share: catalog, policies, inventory, promises.

One per hub process, built from the platform settings (`c.AiInfnPlatform`) on first use (and
checked at hub start by checks.py, which the repository's jupyterhub_config.py sets up, so a bad
catalog or policy stops the hub with the key that is wrong).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from traitlets.config import Config

from . import catalog as catalog_module
from . import policy
from .inventory import Inventory
from .platform_config import AiInfnPlatform
from .reservations import Reservations


@dataclass
class Platform:
    catalog: catalog_module.Catalog
    default_rules: policy.Rules
    group_rules: dict[str, policy.Rules]
    inventory: Inventory
    reservations: Reservations = field(default_factory=Reservations)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    watcher: Any = None
    watcher_start: asyncio.Task | None = None
    # The accounting ledger's writer (accounting/writer.py) when c.AiInfnAccounting is set.
    accounting: Any = None


def load(settings: AiInfnPlatform) -> Platform:
    """Validate and build the platform state; raises CatalogError or PolicyError."""
    catalog = catalog_module.load(Path(settings.catalog_file))
    return Platform(
        catalog=catalog,
        default_rules=policy.parse_rules(settings.default_policy, catalog, "default_policy"),
        group_rules=policy.parse_policies(settings.group_policies, catalog),
        inventory=Inventory(catalog.accelerators, reservation_taint=settings.reservation_taint_key),
    )


def load_from_config(config: Config) -> Platform:
    """The platform state from a loaded hub config; raises CatalogError or PolicyError."""
    return load(AiInfnPlatform(config=config))


def check_config(config: Config) -> None:
    """Validate the platform part of a loaded hub config (catalog, policies, storage);
    exit with the reason if it is bad, so a misconfigured hub never starts."""
    from . import storage_config

    try:
        load_from_config(config)
    except (catalog_module.CatalogError, policy.PolicyError) as error:
        raise SystemExit(f"aiinfn-hub: invalid platform configuration: {error}") from None
    storage_config.check_config(config)
