"""Build the cluster's binaries once (build.sh), with clear errors for a missing or old Go."""

from __future__ import annotations

import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from . import versions
from .errors import DevClusterError


def missing_binaries(cache: Path) -> list[str]:
    """Components whose build is not complete in the cache."""
    missing = []
    for name, path in versions.binaries(cache).items():
        done = path.parent.parent / ".done"
        if not (done.exists() and path.exists()):
            missing.append(name)
    return missing


def check_go() -> str:
    """Return the go binary, or raise naming what to install."""
    go = shutil.which("go")
    if not go:
        raise DevClusterError(
            "the Go toolchain is missing: install Go >= {}.{} once to build the dev cluster "
            "(or set AIINFN_KUBECONFIG to an existing cluster)".format(*versions.MIN_GO)
        )
    out = subprocess.run([go, "version"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"go(\d+)\.(\d+)", out)
    if not match or (int(match[1]), int(match[2])) < versions.MIN_GO:
        raise DevClusterError(
            "Go {} is too old: the dev cluster build needs Go >= {}.{} "
            "(found by `go version`: {})".format(
                match.group(0) if match else "?", *versions.MIN_GO, out.strip() or "no output"
            )
        )
    return go


def build(cache: Path, log=print) -> None:
    """Build whatever is missing; a half-built component directory is rebuilt from scratch."""
    if not missing_binaries(cache):
        return
    check_go()
    script = resources.files(__package__) / "build.sh"
    log(f"building the dev cluster into {cache} (first time only; about 30 minutes on 2 cores)")
    argv = [
        "bash",
        str(script),
        str(cache),
        versions.KUBERNETES,
        versions.ETCD,
        versions.KWOK,
        versions.KUEUE,
    ]
    result = subprocess.run(argv, check=False)
    if result.returncode != 0:
        raise DevClusterError(
            f"building the dev cluster failed (exit {result.returncode}); "
            "the output above says why. Re-run to resume: "
            f"completed components in {cache} are kept"
        )
