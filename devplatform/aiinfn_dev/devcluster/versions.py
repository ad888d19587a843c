"""Pinned component versions and where their builds are cached (outside the repository)."""

from __future__ import annotations

import os
from pathlib import Path

KUBERNETES = "1.36.1"
ETCD = "3.6.10"
KWOK = "0.8.0"
KUEUE = "0.19.2"
MIN_GO = (1, 26)


def cache_dir() -> Path:
    """AIINFN_DEVCLUSTER_CACHE, else $XDG_CACHE_HOME/aiinfn-hub/devcluster (~/.cache by default)."""
    if os.environ.get("AIINFN_DEVCLUSTER_CACHE"):
        return Path(os.environ["AIINFN_DEVCLUSTER_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "aiinfn-hub" / "devcluster"


def binaries(cache: Path) -> dict[str, Path]:
    """Every binary the cluster runs, by component name."""
    k8s = cache / f"kubernetes-{KUBERNETES}" / "bin"
    return {
        "etcd": cache / f"etcd-{ETCD}" / "bin" / "etcd",
        "kube-apiserver": k8s / "kube-apiserver",
        "kube-controller-manager": k8s / "kube-controller-manager",
        "kube-scheduler": k8s / "kube-scheduler",
        "kubectl": k8s / "kubectl",
        "kwok": cache / f"kwok-{KWOK}" / "bin" / "kwok",
        "kueue": cache / f"kueue-{KUEUE}" / "bin" / "kueue",
    }


def kwok_stages(cache: Path) -> Path:
    """kwok's own stage library, copied from its module at build time."""
    return cache / f"kwok-{KWOK}" / "stages"


def kueue_manifests(cache: Path) -> Path:
    """Kueue's CRDs (crd/) and webhook definitions (webhook.yaml), copied from its module at build
    time."""
    return cache / f"kueue-{KUEUE}" / "config"
