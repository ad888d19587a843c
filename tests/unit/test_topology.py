"""Topologies are data: the loader's output is a literal Node manifest."""

import pytest
from aiinfn_dev import kueue_config
from aiinfn_dev.devcluster import topology


def test_ai_infn_farm_node_manifest_is_literal():
    nodes = {n["metadata"]["name"]: n for n in topology.node_manifests("ai-infn")}
    assert nodes["server2-a100-mig"] == {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": "server2-a100-mig",
            "labels": {
                "kubernetes.io/hostname": "server2-a100-mig",
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                "aiinfn.infn.it/devcluster-topology": "ai-infn",
                "aiinfn.infn.it/server": "server2",
                "nvidia.com/gpu.present": "true",
                "nvidia.com/mig.capable": "true",
                "nvidia.com/gpu.product": "NVIDIA-A100-80GB-PCIe",
                "nvidia.com/gpu.family": "ampere",
                "nvidia.com/gpu.memory": "81920",
                "nvidia.com/gpu.count": "1",
                "nvidia.com/mig.strategy": "mixed",
                "nvidia.com/mig.config": "all-balanced",
                "nvidia.com/mig-1g.10gb.count": "2",
                "nvidia.com/mig-2g.20gb.count": "1",
                "nvidia.com/mig-3g.40gb.count": "1",
            },
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"podCIDR": "127.64.3.0/24", "podCIDRs": ["127.64.3.0/24"], "taints": []},
        "status": {
            "allocatable": {
                "cpu": "32",
                "memory": "256Gi",
                "pods": "110",
                "nvidia.com/mig-1g.10gb": "2",
                "nvidia.com/mig-2g.20gb": "1",
                "nvidia.com/mig-3g.40gb": "1",
            },
            "capacity": {
                "cpu": "32",
                "memory": "256Gi",
                "pods": "110",
                "nvidia.com/mig-1g.10gb": "2",
                "nvidia.com/mig-2g.20gb": "1",
                "nvidia.com/mig-3g.40gb": "1",
            },
        },
    }


def test_ai_infn_farm_matches_the_paper():
    nodes = topology.node_manifests("ai-infn")

    def total(resource, server=None):
        return sum(
            int(n["status"]["allocatable"].get(resource, 0))
            for n in nodes
            if server is None or n["metadata"]["labels"].get(topology.SERVER_LABEL) == server
        )

    def count(product):
        return sum(
            int(n["status"]["allocatable"].get("nvidia.com/gpu", 0))
            for n in nodes
            if n["metadata"]["labels"].get("nvidia.com/gpu.product") == product
            and n["metadata"]["labels"].get(topology.SERVER_LABEL) != "remote"
        )

    assert count("Tesla-T4") == 8
    assert count("Quadro-RTX-5000") == 6
    assert count("NVIDIA-A30") == 1
    # 2 + 3 A100s: four whole ones plus one split into MIG slices.
    assert count("NVIDIA-A100-80GB-PCIe") == 4
    assert total("nvidia.com/mig-3g.40gb") == 1
    assert total("xilinx.com/fpga-xilinx_u50_gen3x16_xdma_201920_3") == 2
    assert total("xilinx.com/fpga-xilinx_u250_gen3x16_xdma_shell_4_1") == 6
    assert total("amd.com/versal-v70") == 2
    for server in ("server1",):
        assert (
            sum(
                int(n["status"]["allocatable"]["cpu"])
                for n in nodes
                if n["metadata"]["labels"].get(topology.SERVER_LABEL) == server
            )
            == 64
        )
    for server in ("server2", "server3", "server4"):
        assert (
            sum(
                int(n["status"]["allocatable"]["cpu"])
                for n in nodes
                if n["metadata"]["labels"].get(topology.SERVER_LABEL) == server
            )
            == 128
        )


def test_every_pod_range_is_loopback_and_distinct():
    nodes = topology.node_manifests("synthetic-1000")
    assert len(nodes) == 1000
    cidrs = [n["spec"]["podCIDR"] for n in nodes]
    assert len(set(cidrs)) == 1000
    assert all(c.startswith("127.") for c in cidrs)
    assert cidrs[-1] == "127.67.231.0/24"


def test_unknown_fields_templates_and_duplicates_are_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes:\n- {name: a, gpus: 3}\n")
    with pytest.raises(topology.TopologyError, match="unknown fields"):
        topology.node_manifests(str(bad))
    bad.write_text("nodes:\n- {name: a, template: nope}\n")
    with pytest.raises(topology.TopologyError, match="unknown template"):
        topology.node_manifests(str(bad))
    bad.write_text("nodes:\n- {name: a}\n- {name: a}\n")
    with pytest.raises(topology.TopologyError, match="repeated"):
        topology.node_manifests(str(bad))
    with pytest.raises(topology.TopologyError, match="unknown topology"):
        topology.node_manifests("no-such-topology")


@pytest.mark.parametrize("name", ["ai-infn", "synthetic-1000"])
def test_every_node_kind_is_selected_by_a_shipped_flavor(name):
    """A node no ResourceFlavor of helm-values/kueue-queues.yaml selects can run no job: on
    synthetic-1000 the CPU nodes once lacked the `cpu` flavor's label, and every CPU job was
    refused as never runnable."""
    flavors = [
        d["spec"].get("nodeLabels", {})
        for d in kueue_config.load()
        if d["kind"] == "ResourceFlavor"
    ]
    unselected = sorted(
        n["metadata"]["name"]
        for n in topology.node_manifests(name)
        if not any(
            labels.items() <= n["metadata"]["labels"].items() for labels in flavors if labels
        )
    )
    assert unselected == []
