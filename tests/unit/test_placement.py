"""Placement traits, compared literally."""

from aiinfn_hub import catalog, placement, policy, profiles

CATALOG = catalog.load(catalog.default_path())
USER = policy.for_user(
    policy.parse_rules(
        {"accelerators": "*", "environments": "*", "max_accelerators": 2}, CATALOG, "d"
    ),
    {},
    ["cms-ml"],
)
SETTINGS = placement.PlacementSettings(
    priority_class="aiinfn-notebook",
    reservation_taint_key="reserved",
    accelerator_node_labels=("nvidia.com/gpu.present", "xilinx.com/fpga.board"),
    cpu_on_accelerator_nodes=False,
)


def test_a100_lands_on_a100_nodes_only():
    plan = profiles.resolve(CATALOG, USER, {"accelerator": "a100", "count": 2}, 0)
    assert placement.spawner_traits(plan, ["cms-ml"], SETTINGS) == {
        "image": "harbor.cloud.infn.it/ai-infn/ml-gpu:2025.10",
        "cpu_guarantee": 8.0,
        "cpu_limit": 8.0,
        "mem_guarantee": 32 * 2**30,
        "mem_limit": 32 * 2**30,
        "extra_resource_guarantees": {"nvidia.com/gpu": "2"},
        "extra_resource_limits": {"nvidia.com/gpu": "2"},
        "node_affinity_required": [
            {
                "matchExpressions": [
                    {"key": "type", "operator": "NotIn", "values": ["virtual-kubelet"]},
                    {
                        "key": "nvidia.com/gpu.product",
                        "operator": "In",
                        "values": ["NVIDIA-A100-80GB-PCIe"],
                    },
                ]
            }
        ],
        "tolerations": [
            {"key": "reserved", "operator": "Equal", "value": "cms-ml", "effect": "NoSchedule"}
        ],
        "priority_class_name": "aiinfn-notebook",
        "extra_labels": {"aiinfn.infn.it/accelerator": "a100"},
    }


def test_mig_slices_ask_for_their_own_resource():
    plan = profiles.resolve(CATALOG, USER, {"accelerator": "a100-mig-3g-40gb"}, 0)
    traits = placement.spawner_traits(plan, [], SETTINGS)
    assert traits["extra_resource_limits"] == {"nvidia.com/mig-3g.40gb": "1"}
    assert traits["tolerations"] == []


def test_cpu_only_servers_avoid_accelerator_nodes_unless_allowed():
    plan = profiles.resolve(CATALOG, USER, {"accelerator": "cpu"}, 0)
    traits = placement.spawner_traits(plan, [], SETTINGS)
    assert traits["extra_resource_limits"] == {}
    assert traits["node_affinity_required"] == [
        {
            "matchExpressions": [
                {"key": "type", "operator": "NotIn", "values": ["virtual-kubelet"]},
                {"key": "nvidia.com/gpu.present", "operator": "DoesNotExist"},
                {"key": "xilinx.com/fpga.board", "operator": "DoesNotExist"},
            ]
        }
    ]
    allowed = placement.PlacementSettings(**{**SETTINGS.__dict__, "cpu_on_accelerator_nodes": True})
    assert placement.spawner_traits(plan, [], allowed)["node_affinity_required"] == [
        {"matchExpressions": [{"key": "type", "operator": "NotIn", "values": ["virtual-kubelet"]}]}
    ]
