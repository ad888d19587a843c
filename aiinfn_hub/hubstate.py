"""The hub-process-wide platform state the spawners share: catalog, policies, inventory, promises.

One per hub process, built from the spawner's configuration on first use (and checked at hub
start by checks.py, which the repository's jupyterhub_config.py sets up, so a bad catalog or
policy stops the hub with the key that is wrong).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from traitlets.config import Config

from . import catalog as catalog_module
from . import policy
from .inventory import Inventory
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


def load(catalog_file: str, default_policy: Mapping[str, Any], group_policies: Mapping[str, Any],
         reservation_taint_key: str) -> Platform:
    """Validate and build the platform state; raises CatalogError or PolicyError."""
    catalog = catalog_module.load(Path(catalog_file))
    return Platform(
        catalog=catalog,
        default_rules=policy.parse_rules(default_policy, catalog, "default_policy"),
        group_rules=policy.parse_policies(group_policies, catalog),
        inventory=Inventory(catalog.accelerators, reservation_taint=reservation_taint_key),
    )


def spawner_setting(config: Config, name: str) -> Any:
    """A spawner setting as a loaded hub config gives it (c.AiInfnSpawner over c.KubeSpawner),
    else AiInfnSpawner's static default; for readers of the config that have no spawner."""
    from .spawner import AiInfnSpawner

    for section in ("AiInfnSpawner", "KubeSpawner"):
        if name in config.get(section, {}):
            return config[section][name]
    return AiInfnSpawner.class_traits()[name].default()


def load_from_config(config: Config) -> Platform:
    """The platform state from a loaded hub config; raises CatalogError or PolicyError."""
    return load(*(spawner_setting(config, name) for name in
                  ("catalog_file", "default_policy", "group_policies", "reservation_taint_key")))


def check_config(config: Config) -> None:
    """Validate the platform part of a loaded hub config (spawner, catalog, policies, storage);
    exit with the reason if it is bad, so a misconfigured hub never starts."""
    from . import storage_config

    try:
        load_from_config(config)
    except (catalog_module.CatalogError, policy.PolicyError) as error:
        raise SystemExit(f"aiinfn-hub: invalid platform configuration: {error}") from None
    storage_config.check_config(config)
