"""AiInfnKernelSpecManager: Jupyter's kernel specs plus one per environment under /envs and
~/envs, found again on every request (a published environment appears without a restart).

Configured in the notebook image (images/notebook/jupyter/jupyter_server_config.json).
"""

from __future__ import annotations

import os
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from traitlets import List, Unicode

from . import kernelspecs, layout


class AiInfnKernelSpecManager(KernelSpecManager):
    """Kernels from the managed environments and the user's own, besides the installed ones.

    Notebook side: its settings go in the notebook image's Jupyter Server configuration
    (images/notebook/jupyter/), not in the hub's."""

    managed_root = Unicode(
        "/envs", config=True, help="The folder of the managed environments (read-only mount)."
    )
    user_root = Unicode(
        "~/envs", config=True, help="The folder of the user's own environments ('~' is $HOME)."
    )
    apptainer_command = List(
        Unicode(),
        default_value=["apptainer"],
        config=True,
        help="The command that runs Apptainer images (argv before 'exec').",
    )

    def _environment_specs(self) -> dict[str, Any]:
        """Kernel name -> KernelSpec of every environment found now (the folders are read on
        each call, so what a curator publishes shows at the next listing)."""
        roots = (("managed", self.managed_root), ("home", os.path.expanduser(self.user_root)))
        specs: dict[str, Any] = {}
        for origin, root in roots:
            found, skipped = layout.scan(root)
            for problem in skipped:
                self.log.warning("Environment skipped: %s", problem)
            for environment in found:
                name = kernelspecs.kernel_name(origin, environment.name)
                if self.allowed_kernelspecs and name not in self.allowed_kernelspecs:
                    continue
                spec = kernelspecs.kernel_spec(environment, origin, self.apptainer_command)
                specs[name] = self.kernel_spec_class(resource_dir=environment.path, **spec)
        return specs

    def find_kernel_specs(self) -> dict[str, str]:
        found = dict(super().find_kernel_specs())
        for name, spec in self._environment_specs().items():
            found.setdefault(name, spec.resource_dir)
        return found

    def get_kernel_spec(self, kernel_name: str) -> Any:
        spec = self._environment_specs().get(kernel_name.lower())
        return spec if spec is not None else super().get_kernel_spec(kernel_name)

    def get_all_specs(self) -> dict[str, Any]:
        """The installed kernels' specs, then the environments' (one scan, not one per name)."""
        specs: dict[str, Any] = {}
        for name, resource_dir in super().find_kernel_specs().items():
            try:
                spec = super().get_kernel_spec(name)
            except NoSuchKernel:
                continue
            except Exception:
                self.log.warning("Error loading kernelspec %r", name, exc_info=True)
                continue
            specs[name] = {"resource_dir": resource_dir, "spec": spec.to_dict()}
        for name, spec in self._environment_specs().items():
            specs.setdefault(name, {"resource_dir": spec.resource_dir, "spec": spec.to_dict()})
        return specs
