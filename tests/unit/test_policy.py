"""Group rules: validated against the catalog, united across groups, denials with reasons."""

import pytest

from aiinfn_hub import catalog, policy

CATALOG = catalog.load(catalog.default_path())
DEFAULT = policy.parse_rules(
    {"accelerators": ["cpu"], "environments": ["cpu"], "max_cpu": "4"}, CATALOG, "default"
)
GROUPS = policy.parse_policies(
    {
        "cms-ml": {
            "accelerators": ["t4", "a100"],
            "environments": "*",
            "max_accelerators": 2,
            "max_memory": "64Gi",
        },
        "fpga-lab": {
            "accelerators": ["u250"],
            "environments": ["fpga"],
            "max_accelerators": 1,
            "custom_images": True,
        },
    },
    CATALOG,
)


def test_a_user_in_several_groups_gets_the_union():
    user = policy.for_user(DEFAULT, GROUPS, ["cms-ml", "fpga-lab", "unknown-group"])
    assert user.rules == policy.Rules(
        accelerators=frozenset({"cpu", "t4", "a100", "u250"}),
        environments=None,
        custom_images=True,
        max_accelerators=2,
        max_cpu=float("inf"),
        max_memory=float("inf"),
    )
    assert user.groups == frozenset({"cms-ml", "fpga-lab", "unknown-group"})


def test_no_groups_means_the_default():
    assert policy.for_user(DEFAULT, GROUPS, []).rules == DEFAULT
    assert DEFAULT.max_cpu == 4 and DEFAULT.max_memory == float("inf")


def test_denials_carry_reasons():
    user = policy.for_user(DEFAULT, GROUPS, ["cms-ml"])
    assert policy.accelerator_denial(user, "v70", 1, 0) == "not available to your groups"
    assert (
        policy.accelerator_denial(user, "a100", 2, 1)
        == "over your limit of 2 accelerators: you hold 1 and asked for 2"
    )
    assert policy.accelerator_denial(user, "a100", 1, 1) is None
    assert policy.accelerator_denial(user, "cpu", 0, 2) is None


@pytest.mark.parametrize(
    "entry, message",
    [
        (
            {"accelerators": ["h100"]},
            r"^group_policies\.g\.accelerators: not in the catalog: h100 "
            r"\(allowed: '\*' or cpu, t4, ",
        ),
        (
            {"environments": ["ml-gpu", "matlab"]},
            r"^group_policies\.g\.environments: not in the catalog: matlab "
            r"\(allowed: '\*' or cpu, ml-gpu",
        ),
        (
            {"accelerators": "t4"},
            r"^group_policies\.g\.accelerators: must be '\*' or a list of catalog keys$",
        ),
        ({"max_accelerators": -1}, r"max_accelerators: must be a whole number 0\.\.64$"),
        ({"max_accelerators": True}, r"max_accelerators: must be a whole number 0\.\.64$"),
        (
            {"max_memory": "a lot"},
            r"max_memory: must be a Kubernetes quantity such as 4, 500m or 16Gi",
        ),
        ({"custom_images": "yes"}, r"custom_images: must be true or false$"),
        (
            {"queues": ["x"]},
            r"^group_policies\.g: unknown field\(s\) queues \(allowed: accelerators, "
            r"environments, custom_images, max_accelerators, max_cpu, max_memory\)$",
        ),
        ("everything", r"^group_policies\.g: must be a mapping$"),
    ],
)
def test_bad_entries_name_group_field_and_what_is_allowed(entry, message):
    with pytest.raises(policy.PolicyError, match=message):
        policy.parse_policies({"g": entry}, CATALOG)


def test_every_bad_group_is_a_line():
    with pytest.raises(policy.PolicyError) as raised:
        policy.parse_policies(
            {
                "a": {"max_cpu": "lots", "custom_images": 1},
                "b": {},
                "c": {"accelerators": ["h100"]},
            },
            CATALOG,
        )
    assert [line.split(":")[0] for line in str(raised.value).splitlines()] == [
        "group_policies.a.custom_images",
        "group_policies.a.max_cpu",
        "group_policies.c.accelerators",
    ]


def test_quantities_may_be_whole_numbers_or_text():
    rules = policy.parse_rules({"max_cpu": 8, "max_memory": "64Gi"}, CATALOG, "default_policy")
    assert (rules.max_cpu, rules.max_memory) == (8, 64 * 2**30)
    assert (rules.accelerators, rules.environments, rules.max_accelerators) == (
        frozenset(),
        frozenset(),
        0,
    )
