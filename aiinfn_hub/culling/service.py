"""The service `aiinfn-culler`: its hub registration and role (60-culling.py) and the culler's
configuration (culler_config.py, in the culler's process)."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from traitlets.config import Config, PyFileConfigLoader

from .. import catalog
from ..platform_config import AiInfnPlatform
from ..services.base import HUB_CONFIG_ENV, hub_config_file
from .arbiter import Arbiter, check_template
from .settings import SERVICE_NAME, AiInfnCulling
from .warnings import WarningStore

# What jupyterhub-idle-culler needs (its README's "Permissions"), and the users' groups for
# c.AiInfnCulling.exempt_groups. No admin:users: it never deletes users.
SCOPES = ["list:users", "read:users:activity", "read:servers", "delete:servers"]
SCOPES += ["read:users:groups"]


def service_entry() -> dict[str, Any]:
    """The hub-managed service: jupyterhub-idle-culler with our arbiter (`python -m
    aiinfn_hub.culling`), in the hub's working directory (where the warnings file is), reading
    the hub's configuration file."""
    passed = {k: v for k, v in os.environ.items() if k == "POD_NAMESPACE"}
    return {
        "name": SERVICE_NAME,
        "command": [sys.executable, "-m", "aiinfn_hub.culling"],
        "environment": {HUB_CONFIG_ENV: hub_config_file(), **passed},
        "cwd": os.getcwd(),
    }


def role() -> dict[str, Any]:
    return {
        "name": SERVICE_NAME,
        "description": "Stop idle servers (docs/culling.md): list them, read activity and groups",
        "scopes": list(SCOPES),
        "services": [SERVICE_NAME],
    }


def main() -> None:
    """Run jupyterhub-idle-culler with the hub's configuration (c.AiInfnCulling, the catalog,
    KubeSpawner's pod naming) and this platform's arbiter."""
    from jupyterhub_idle_culler import IdleCuller

    path = os.path.abspath(os.environ[HUB_CONFIG_ENV])
    config = PyFileConfigLoader(os.path.basename(path), os.path.dirname(path)).load_config()
    configure(config)
    logging.basicConfig(
        level=logging.INFO, format="[%(levelname)1.1s %(asctime)s %(name)s] %(message)s"
    )
    IdleCuller.launch_instance(argv=[], config=config)


def configure(c: Config) -> None:
    """Give jupyterhub-idle-culler (IdleCuller) the arbiter and the check interval. Its own
    timeout and max age stay unused: the arbiter applies the per-kind ones (rules.py)."""
    from kubespawner import KubeSpawner

    settings = AiInfnCulling(config=c)
    spawner = c.KubeSpawner
    template = spawner.get("pod_name_template", KubeSpawner.pod_name_template.default_value)
    namespace = spawner.get("namespace") or os.environ.get("POD_NAMESPACE", "default")
    arbiter = Arbiter(
        limits=settings.limits(),
        threshold=settings.gpu_idle_threshold,
        exempt_groups=frozenset(settings.exempt_groups),
        catalog=catalog.load(AiInfnPlatform(config=c).catalog_file),
        namespace=namespace,
        pod_template=check_template(template),
        slug_scheme=spawner.get("slug_scheme", KubeSpawner.slug_scheme.default_value),
        hub_url=os.environ["JUPYTERHUB_API_URL"].rstrip("/"),
        token=os.environ["JUPYTERHUB_API_TOKEN"],
        prometheus_url=settings.prometheus_url,
        mig_metric=settings.mig_metric,
        store=WarningStore(settings.warnings_path(), 3 * settings.check_every),
    )
    c.IdleCuller.cull_arbiter_hook = arbiter
    c.IdleCuller.cull_every = settings.check_every
    c.IdleCuller.max_age = 0
    c.IdleCuller.cull_users = False
    c.IdleCuller.config_file = ""  # no idle_culler_config.py from the working directory
