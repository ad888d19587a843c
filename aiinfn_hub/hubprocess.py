"""Which JupyterHub process is loading the configuration, for the configuration files that start
something on the hub's event loop (the start checks, accounting). Imports nothing of JupyterHub:
it only looks at what the hub process has already loaded."""

from __future__ import annotations

import asyncio
import sys
from typing import Any


def starting_hub() -> Any:
    """The JupyterHub whose configuration is being loaded, or None (a service, a command, or
    one of JupyterHub's subcommands, which load the file without an event loop)."""
    app = sys.modules.get("jupyterhub.app")
    if app is None or not app.JupyterHub.initialized():
        return None
    hub = app.JupyterHub._instance  # the one public handle on a running hub
    if not isinstance(hub, app.JupyterHub):
        return None
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return None
    return hub
