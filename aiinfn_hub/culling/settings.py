"""c.AiInfnCulling: idle culling's settings (docs/culling.md), read by the hub
(jupyterhub_config.d/60-culling.py) and by the culler it runs (culler_config.py)."""

from __future__ import annotations

import os

from traitlets import Bool, Float, Int, List, TraitError, Unicode, validate
from traitlets.config import Configurable

from .rules import Limits

SERVICE_NAME = "aiinfn-culler"


class AiInfnCulling(Configurable):
    """Idle culling: jupyterhub-idle-culler as a hub-managed service, deciding per server."""

    enabled = Bool(
        False,
        help="""Run the culler (the service `aiinfn-culler`: jupyterhub-idle-culler with this
        platform's rules). Off by default; helm-values/values.yaml turns it on.""",
    ).tag(config=True)
    cpu_timeout = Int(
        8 * 3600,
        help="Seconds without activity after which a CPU-only server is stopped (0: never).",
    ).tag(config=True)
    accelerator_timeout = Int(
        3600,
        help="""Seconds without activity after which a server holding accelerators (GPU, MIG
        slice, FPGA) is stopped (0: never). Shorter than cpu_timeout: they block hardware.""",
    ).tag(config=True)
    max_age = Int(
        7 * 24 * 3600,
        help="Seconds after its start at which any server is stopped, active or not (0: never).",
    ).tag(config=True)
    gpu_idle_threshold = Float(
        5.0,
        help="""GPU utilisation in percent (DCGM_FI_DEV_GPU_UTIL) under which a GPU counts as
        idle.""",
    ).tag(config=True)
    gpu_idle_time = Int(
        2 * 3600,
        help="""Seconds every GPU of a server must stay under gpu_idle_threshold (per
        Prometheus) for the server to be stopped even though the notebook reports activity
        (0: no GPU rule). Needs prometheus_url.""",
    ).tag(config=True)
    mig_metric = Unicode(
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
        help="""The DCGM field (a ratio, 0 to 1) that tells how busy a MIG slice is, for the GPU
        rule on MIG servers (they do not report DCGM_FI_DEV_GPU_UTIL); the exporter must collect
        it (a profiling field). Empty: MIG servers are culled on activity only.""",
    ).tag(config=True)
    warn_before = Int(
        15 * 60,
        help="""Seconds before stopping a server that its user is warned (a banner on the hub's
        pages). A server is stopped only after a warning at least this old.""",
    ).tag(config=True)
    check_every = Int(
        300,
        help="Seconds between two checks of every server (the culler's --cull-every).",
    ).tag(config=True)
    exempt_groups = List(
        Unicode(),
        help="Groups whose members' servers are never stopped by the culler.",
    ).tag(config=True)
    prometheus_url = Unicode(
        "",
        help="""Prometheus' base URL (http://prometheus-server.monitoring.svc), where the
        NVIDIA DCGM exporter's series are; empty: no GPU rule, activity only.""",
    ).tag(config=True)
    warnings_file = Unicode(
        "aiinfn-culling-warnings.json",
        help="""File (relative to the hub's working directory) where the culler keeps the
        warnings it gave, and from which the hub shows each user theirs.""",
    ).tag(config=True)

    @validate("cpu_timeout", "accelerator_timeout", "max_age", "gpu_idle_time", "warn_before")
    def _validate_seconds(self, proposal):
        if proposal.value < 0:
            raise TraitError(f"c.AiInfnCulling.{proposal.trait.name} must be >= 0 seconds")
        return proposal.value

    @validate("check_every")
    def _validate_check_every(self, proposal):
        if proposal.value < 1:
            raise TraitError("c.AiInfnCulling.check_every must be >= 1 second")
        return proposal.value

    @validate("gpu_idle_threshold")
    def _validate_threshold(self, proposal):
        if not 0 < proposal.value <= 100:
            raise TraitError("c.AiInfnCulling.gpu_idle_threshold must be in (0, 100] percent")
        return proposal.value

    @validate("prometheus_url")
    def _validate_prometheus_url(self, proposal):
        if proposal.value and not proposal.value.startswith(("http://", "https://")):
            raise TraitError("c.AiInfnCulling.prometheus_url must be an http(s) URL or empty")
        return proposal.value

    def limits(self) -> Limits:
        """The rules' limits; a warning lead time not shorter than a rule's time is refused (the
        server would be warned all along)."""
        gpu_time = self.gpu_idle_time if self.prometheus_url else 0
        rules = {"cpu_timeout": self.cpu_timeout, "accelerator_timeout": self.accelerator_timeout}
        rules |= {"max_age": self.max_age, "gpu_idle_time": gpu_time}
        for name, seconds in rules.items():
            if 0 < seconds <= self.warn_before:
                raise TraitError(
                    f"c.AiInfnCulling.warn_before ({self.warn_before} s) must be shorter than "
                    f"c.AiInfnCulling.{name} ({seconds} s)"
                )
        return Limits(
            cpu_timeout=self.cpu_timeout,
            accelerator_timeout=self.accelerator_timeout,
            max_age=self.max_age,
            gpu_idle_time=gpu_time,
            warn_before=self.warn_before,
        )

    def warnings_path(self) -> str:
        return os.path.abspath(self.warnings_file)
