"""Platform settings: one traitlets Configurable (`c.AiInfnPlatform.*`) for the hub and services.

The spawner, the job service and the admin checks all need the catalog, the policies and the
placement settings. Each builds `AiInfnPlatform(config=config)` (or `parent=spawner`) from the
same loaded configuration, so no component reads raw config sections by hand and none imports
the spawner to learn a default. Older configurations set these keys on `c.AiInfnSpawner`; they
still apply, with a deprecation warning, unless `c.AiInfnPlatform` sets the same key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from traitlets import Bool, Dict, List, Unicode
from traitlets.config import Config, Configurable
from traitlets.config.loader import LazyConfigValue
from traitlets.log import get_logger

from . import catalog

DEPRECATED_SECTION = "AiInfnSpawner"
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class AiInfnPlatform(Configurable):
    """Catalog, access rules and node placement shared by the spawner and the services."""

    catalog_file = Unicode(
        str(catalog.default_path()),
        config=True,
        help="Path of the platform catalog YAML (accelerators, environments, sizes). "
        "Checked at hub start.",
    )
    default_policy = Dict(
        {"accelerators": "*", "environments": "*", "max_accelerators": 1},
        config=True,
        help="""Rules for every user: accelerators and environments ("*" or a list of catalog keys),
        custom_images (bool), max_accelerators (units held at once over all servers), max_cpu and
        max_memory (largest server size). Group rules add to these.""",
    )
    group_policies = Dict(
        config=True,
        help="""Rules per group name, same fields as default_policy. A user in several groups gets
        the union: every key any group allows and the largest caps.""",
    )
    notebook_priority_class = Unicode(
        "aiinfn-notebook",
        config=True,
        help="PriorityClass of notebook pods; it must rank above the batch class so batch yields.",
    )
    reservation_taint_key = Unicode(
        "reserved",
        config=True,
        help="Taint key that reserves a node for a group (value: the group name). "
        "Members tolerate it.",
    )
    accelerator_node_labels = List(
        Unicode(),
        ["nvidia.com/gpu.present", "xilinx.com/fpga.board"],
        config=True,
        help="Labels marking accelerator nodes; CPU-only servers (and CPU jobs) avoid nodes "
        "carrying any of them.",
    )
    cpu_on_accelerator_nodes = Bool(
        False, config=True, help="Allow CPU-only servers and CPU jobs on accelerator nodes."
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._apply_deprecated(self.config)

    def _apply_deprecated(self, config: Config) -> None:
        """Keys still set the old way (`c.AiInfnSpawner.<key>`) apply when the new section
        does not set them; each is named in the log so the config can be moved."""
        old = config.get(DEPRECATED_SECTION, {})
        new = config.get(type(self).__name__, {})
        log = getattr(self.parent, "log", None) or get_logger()
        for name in sorted(set(old) & set(self.trait_names(config=True)) - set(new)):
            log.warning(
                "c.%s.%s is deprecated: set c.AiInfnPlatform.%s", DEPRECATED_SECTION, name, name
            )
            value = old[name]
            if isinstance(value, LazyConfigValue):
                value = value.get_value(getattr(self, name))
            setattr(self, name, value)


def notebook_namespace(config: Config) -> str:
    """KubeSpawner.namespace (KubeSpawner's trait, not the platform's), with KubeSpawner's
    default: the pod's own namespace, else "default"; for services that have no spawner."""
    for section in ("AiInfnSpawner", "KubeSpawner"):
        value = config.get(section, {}).get("namespace")
        if isinstance(value, str) and value:
            return value
    try:
        return Path(SERVICE_ACCOUNT_NAMESPACE).read_text().strip()
    except OSError:
        return "default"
