"""`aiinfn-hub check` against the dev cluster, run as the hub's own account (the z2jh chart's
hub Role and every helm-values RBAC object bound to `hub`, in a fresh namespace): with all of it
the command finds no error; with a permission taken away it names that permission, and a hub
with the same configuration refuses to start with the same line."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from aiinfn_dev import hubaccount
from aiinfn_dev.hubaccount import Omit

from aiinfn_hub import catalog
from tests.hub import REPO, start_hub

pytestmark = pytest.mark.integration

CHECK_SECONDS = 180
# An accelerator no node of the dev cluster's farm carries.
H100 = {
    "display_name": "NVIDIA H100",
    "kind": "gpu",
    "resource": "nvidia.com/gpu",
    "node_labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
}


def hub_config(tmp: Path, namespace: str, catalog_file: Path | None = None) -> Path:
    """The repository's hub configuration, spawning into `namespace`."""
    lines = [
        f"load_subconfig({str(REPO / 'jupyterhub_config.py')!r})",
        f"c.KubeSpawner.namespace = {namespace!r}",
    ]
    if catalog_file is not None:
        lines.append(f"c.AiInfnPlatform.catalog_file = {str(catalog_file)!r}")
    path = tmp / "check_config.py"
    path.write_text("\n".join(lines) + "\n")
    return path


def catalog_with_h100(tmp: Path) -> Path:
    document = yaml.safe_load(catalog.default_path().read_text())
    document["accelerators"]["h100"] = H100
    path = tmp / "catalog.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def without_pod_logs() -> list[Omit]:
    """`get pods/log` taken out of every shipped role bound to the hub that grants it."""
    roles = [
        d
        for d in hubaccount.bound_to_hub(hubaccount.load_helm_values())
        if d["kind"] in ("Role", "ClusterRole")
    ]
    omits = [
        Omit(d["metadata"]["name"], "pods/log", verbs=("get",))
        for d in roles
        if any("pods/log" in (rule.get("resources") or ()) for rule in d.get("rules") or ())
    ]
    assert omits, "no shipped role grants pods/log: pick another permission to take away"
    return omits


@contextlib.asynccontextmanager
async def hub_account(api_client, namespace: str, admin: Path, tmp: Path, without=()):
    """A kubeconfig with a token of the hub's account in `namespace`."""
    try:
        yield await hubaccount.hub_kubeconfig(
            api_client, namespace, admin, tmp / "hub.kubeconfig", without=without
        )
    finally:
        await hubaccount.delete_cluster_objects(api_client, namespace)


async def check(config: Path, kubeconfig: Path) -> tuple[int, list[str]]:
    """`aiinfn-hub check`'s exit status and output lines."""
    result = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "aiinfn_hub.admin_cli",
            "check",
            "--config",
            str(config),
            "--kubeconfig",
            str(kubeconfig),
        ],
        capture_output=True,
        text=True,
        timeout=CHECK_SECONDS,
        cwd=config.parent,
    )
    assert result.returncode in (0, 1) and result.stdout, result.stderr
    print(result.stdout)  # shown when the test fails
    return result.returncode, result.stdout.splitlines()


async def test_the_hub_account_as_shipped_passes_every_check(
    devcluster, api_client, namespace, storage, local_queues, tmp_path
):
    admin, _ = devcluster
    async with hub_account(api_client, namespace, admin, tmp_path) as kubeconfig:
        status, lines = await check(hub_config(tmp_path, namespace), kubeconfig)
    assert status == 0, "\n".join(lines)
    assert not [line for line in lines if line.startswith("ERROR")]
    areas = {line.split(":")[0] for line in lines}
    assert {
        "ok config",
        "ok permission",
        "ok priority",
        "ok kueue",
        "ok nodes",
        "ok storage",
    } <= areas, lines


async def test_a_removed_permission_and_an_accelerator_without_nodes_are_named(
    devcluster, api_client, namespace, storage, local_queues, tmp_path
):
    admin, _ = devcluster
    config = hub_config(tmp_path, namespace, catalog_with_h100(tmp_path))
    omits = without_pod_logs()
    async with hub_account(api_client, namespace, admin, tmp_path, omits) as kubeconfig:
        status, lines = await check(config, kubeconfig)
        assert status == 1, "\n".join(lines)
        [missing] = [line for line in lines if line.startswith("ERROR permission:")]
        assert missing.startswith(
            f"ERROR permission: the hub may not get pods/log in namespace "
            f"{namespace} (needed by spawner: a crashed server's last log"
        )
        assert any(
            line.startswith("WARNING nodes: no node offers the catalog accelerator 'h100'")
            for line in lines
        ), lines
        assert any(line.startswith("ERROR kueue: no ResourceFlavor 'h100'") for line in lines), (
            lines
        )
        assert not [
            line
            for line in lines
            if line.startswith(("ERROR", "WARNING"))
            and "pods/log" not in line
            and "h100" not in line
        ], lines

        hub_folder = tmp_path / "hub"
        hub_folder.mkdir()
        with pytest.raises(RuntimeError) as refused:
            await asyncio.to_thread(
                start_hub,
                hub_folder,
                kubeconfig,
                namespace,
                {},
                {},
                [f"c.AiInfnPlatform.catalog_file = {str(tmp_path / 'catalog.yaml')!r}"],
            )
        # The same configuration (the tests' hub runs no job service), checked by the command.
        _, again = await check(hub_folder / "jupyterhub_config.py", kubeconfig)
    _, _, said = str(refused.value).partition("aiinfn-hub: refusing to start")
    stopped = [line for line in said.splitlines() if line.startswith("ERROR")]
    assert stopped == [line for line in again if line.startswith("ERROR permission:")]
    assert stopped == [
        f"ERROR permission: the hub may not get pods/log in namespace {namespace} "
        "(needed by spawner: a crashed server's last log lines)"
    ]
    # The accelerator without nodes is only a warning, in the hub's log before it stops.
    assert "WARNING nodes: no node offers the catalog accelerator 'h100'" in str(refused.value)
