"""Group rules: validated against the catalog, united across groups, denials with reasons."""

import pytest

from aiinfn_hub import catalog, policy

CATALOG = catalog.load(catalog.default_path())
DEFAULT = policy.parse_rules({"accelerators": ["cpu"], "environments": ["cpu"], "max_cpu": "4"}, CATALOG, "default")
GROUPS = policy.parse_policies({
    "cms-ml": {"accelerators": ["t4", "a100"], "environments": "*", "max_accelerators": 2, "max_memory": "64Gi"},
    "fpga-lab": {"accelerators": ["u250"], "environments": ["fpga"], "max_accelerators": 1, "custom_images": True},
}, CATALOG)


def test_a_user_in_several_groups_gets_the_union():
    user = policy.for_user(DEFAULT, GROUPS, ["cms-ml", "fpga-lab", "unknown-group"])
    assert user.rules == policy.Rules(
        accelerators=frozenset({"cpu", "t4", "a100", "u250"}), environments=None, custom_images=True,
        max_accelerators=2, max_cpu=float("inf"), max_memory=float("inf"))
    assert user.groups == frozenset({"cms-ml", "fpga-lab", "unknown-group"})


def test_no_groups_means_the_default():
    assert policy.for_user(DEFAULT, GROUPS, []).rules == DEFAULT
    assert DEFAULT.max_cpu == 4 and DEFAULT.max_memory == float("inf")


def test_denials_carry_reasons():
    user = policy.for_user(DEFAULT, GROUPS, ["cms-ml"])
    assert policy.accelerator_denial(user, "v70", 1, 0) == "not available to your groups"
    assert policy.accelerator_denial(user, "a100", 2, 1) == "over your limit of 2 accelerators: you hold 1 and asked for 2"
    assert policy.accelerator_denial(user, "a100", 1, 1) is None
    assert policy.accelerator_denial(user, "cpu", 0, 2) is None


@pytest.mark.parametrize("entry, message", [
    ({"accelerators": ["h100"]}, r"group_policies\.g\.accelerators: not in the catalog: h100"),
    ({"accelerators": "t4"}, r"must be '\*' or a list"),
    ({"max_accelerators": -1}, r"max_accelerators: must be a whole number"),
    ({"max_accelerators": True}, r"max_accelerators"),
    ({"max_memory": "a lot"}, r"max_memory: must be a Kubernetes quantity"),
    ({"custom_images": "yes"}, r"custom_images: must be true or false"),
    ({"queues": ["x"]}, r"unknown field\(s\) queues"),
])
def test_bad_entries_name_group_and_field(entry, message):
    with pytest.raises(policy.PolicyError, match=message):
        policy.parse_policies({"g": entry}, CATALOG)
