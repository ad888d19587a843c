"""One validation path for the form and the REST API; forged options never become a plan."""

import re

import pytest
from jupyterhub.utils import format_exception

from aiinfn_hub import catalog, form, policy, profiles
from aiinfn_hub.errors import UserError, to_http_error
from aiinfn_hub.profiles import Availability

CATALOG = catalog.load(catalog.default_path())
EVERYTHING = policy.parse_rules(
    {"accelerators": "*", "environments": "*", "max_accelerators": 2, "custom_images": True},
    CATALOG,
    "default",
)
USER = policy.for_user(EVERYTHING, {}, ["cms-ml"])
CPU_ONLY = policy.for_user(
    policy.parse_rules({"accelerators": ["cpu"], "environments": ["cpu"]}, CATALOG, "d"), {}, []
)


def test_empty_options_mean_cpu_with_defaults():
    plan = profiles.resolve(CATALOG, USER, {}, held=0)
    assert plan.as_options() == {"accelerator": "cpu", "size": "small", "environment": "cpu"}
    assert plan.image == "harbor.cloud.infn.it/ai-infn/cpu:2025.10"


def test_full_choice_resolves_to_a_plan():
    plan = profiles.resolve(
        CATALOG, USER, {"accelerator": "a100", "count": 2, "environment": "qml", "size": "large"}, 0
    )
    assert (plan.accelerator.key, plan.count, plan.environment, plan.size.cpu) == (
        "a100",
        2,
        "qml",
        "16",
    )
    assert plan.image == "harbor.cloud.infn.it/ai-infn/qml-gpu:2025.10"


def test_custom_image_must_fully_match():
    image = "harbor.cloud.infn.it/ai-infn-users/alice/env:1.0"
    plan = profiles.resolve(CATALOG, USER, {"accelerator": "t4", "image": image}, 0)
    assert plan.image == image and plan.environment is None
    for bad in (
        image + " --privileged",
        "docker.io/library/ubuntu:22.04",
        image.replace(":1.0", ""),
    ):
        with pytest.raises(UserError, match="custom image is not allowed"):
            profiles.resolve(CATALOG, USER, {"accelerator": "t4", "image": bad}, 0)
    with pytest.raises(UserError, match="custom images are not available to your groups"):
        profiles.resolve(CATALOG, CPU_ONLY, {"image": image}, 0)


@pytest.mark.parametrize(
    "options, message, status",
    [
        ({"accelerator": "h100"}, "unknown accelerator 'h100'", 400),
        (
            {"accelerator": "a100", "count": 3},
            "count for NVIDIA A100 80GB must be one of 1, 2",
            400,
        ),
        ({"accelerator": "a100", "count": True}, "count for", 400),
        ({"accelerator": "a100", "count": "1"}, "count for", 400),
        ({"accelerator": ["a100"]}, "accelerator must be a non-empty string", 400),
        ({"accelerator": "a" * 10_000}, "at most 256 characters", 400),
        ({"accelerator": "t4", "namespace": "kube-system"}, r"unknown option\(s\): namespace", 400),
        ({"accelerator": "t4", "environment": "cpu"}, "does not support NVIDIA Tesla T4", 400),
        (
            {"accelerator": "t4", "environment": "ml-gpu", "image": "x"},
            "either an environment or a custom image",
            400,
        ),
        ({"accelerator": "cpu", "size": "huge"}, "unknown size 'huge'", 400),
        ({"accelerator": "u50", "environment": "nope"}, "unknown environment 'nope'", 400),
    ],
)
def test_forged_options_are_refused_with_a_reason(options, message, status):
    with pytest.raises(UserError, match=message) as error:
        profiles.resolve(CATALOG, USER, options, 0)
    assert error.value.status == status


def test_policy_refusals_are_403():
    with pytest.raises(UserError, match="not available to your groups") as error:
        profiles.resolve(CATALOG, CPU_ONLY, {"accelerator": "a100"}, 0)
    assert error.value.status == 403
    with pytest.raises(
        UserError, match="over your limit of 2 accelerators: you hold 2 and asked for 1"
    ):
        profiles.resolve(CATALOG, USER, {"accelerator": "t4"}, held=2)
    capped = policy.for_user(
        policy.parse_rules(
            {"accelerators": "*", "environments": "*", "max_cpu": "2"}, CATALOG, "d"
        ),
        {},
        [],
    )
    with pytest.raises(UserError, match="over your CPU or memory limit"):
        profiles.resolve(CATALOG, capped, {"accelerator": "cpu", "size": "large"}, 0)


@pytest.mark.parametrize("options", [None, {}, {"accelerator": "cpu"}])
def test_non_objects_and_defaults(options):
    assert profiles.resolve(CATALOG, USER, options, 0).accelerator.key == "cpu"
    with pytest.raises(UserError, match="user_options must be an object"):
        profiles.resolve(CATALOG, USER, ["accelerator", "t4"], 0)


def test_form_fields_become_the_same_options_as_rest():
    formdata = {
        "_xsrf": ["x"],
        "accelerator": ["a100"],
        "count--a100": ["2"],
        "environment--a100": ["qml"],
        "size--a100": ["large"],
        "environment--t4": ["ml-gpu"],
        "image--t4": [""],
    }
    assert profiles.options_from_form(formdata) == {
        "accelerator": "a100",
        "count": 2,
        "environment": "qml",
        "size": "large",
    }
    custom = {
        "accelerator": ["t4"],
        "environment--t4": ["custom-image"],
        "image--t4": ["reg/x/y:1"],
    }
    assert profiles.options_from_form(custom) == {"accelerator": "t4", "image": "reg/x/y:1"}


@pytest.mark.parametrize(
    "formdata, message",
    [
        ({"accelerator": ["t4", "a100"]}, "must be given exactly once"),
        ({"accelerator": ["t4"], "namespace": ["x"]}, "unknown form field 'namespace'"),
        ({"accelerator": ["t4"], "count--t4": ["1e3"]}, "count must be a whole number"),
        ({"environment--t4": ["ml-gpu"]}, "choose an accelerator"),
    ],
)
def test_bad_forms_are_refused(formdata, message):
    with pytest.raises(UserError, match=message):
        profiles.options_from_form(formdata)


def test_build_shows_availability_and_reasons():
    availability = {
        "t4": Availability(free=3, total=8, batch=1, batch_jobs=1, free_now=2),
        "a100": Availability(free=0, total=4, free_now=0),
    }
    built = {
        p["slug"]: p
        for p in profiles.build(
            CATALOG,
            availability,
            USER,
            held=0,
            selected={"accelerator": "t4", "environment": "qml", "count": 2},
        )
    }
    assert built["t4"]["default"] is True
    assert built["t4"]["aiinfn"] == {
        "kind": "gpu",
        "memory": "16 GB",
        "free": 3,
        "free_now": 2,
        "total": 8,
        "batch": 1,
        "batch_jobs": 1,
        "disabled_reason": None,
    }
    assert built["t4"]["profile_options"]["environment"]["choices"]["qml"]["default"] is True
    assert built["t4"]["profile_options"]["count"]["choices"]["2"]["default"] is True
    assert built["a100"]["aiinfn"]["disabled_reason"] == "busy: none free now"
    assert built["v70"]["aiinfn"]["free"] is None
    cpu_only = {p["slug"]: p for p in profiles.build(CATALOG, availability, CPU_ONLY, held=0)}
    assert cpu_only["t4"]["aiinfn"]["disabled_reason"] == "not available to your groups"
    assert cpu_only["cpu"]["default"] is True


def test_form_escapes_everything():
    hostile = catalog.parse(
        {
            "accelerators": {
                "cpu": {
                    "display_name": "<script>alert(1)</script>",
                    "kind": "cpu",
                    "description": '"><img src=x onerror=alert(1)>',
                }
            },
            "environments": {
                "e": {"display_name": "{{ 7*7 }} <b>", "image": "r.io/a/b:1", "kinds": ["cpu"]}
            },
            "sizes": {
                k: {
                    "default": "s",
                    "choices": {"s": {"display_name": "<i>s</i>", "cpu": "1", "memory": "1Gi"}},
                }
                for k in ("cpu", "gpu", "mig", "fpga")
            },
        }
    )
    everyone = policy.for_user(
        policy.parse_rules({"accelerators": "*", "environments": "*"}, hostile, "d"), {}, []
    )
    html = form.render(profiles.build(hostile, {}, everyone, held=0))
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img" not in html and "<b>" not in html and "<i>s" not in html
    assert "{{ 7*7 }}" in html  # shown literally, never evaluated


def test_form_html_follows_its_inputs():
    availability = {"t4": Availability(free=3, total=8, free_now=3)}
    first = form.render(profiles.build(CATALOG, availability, USER, held=0))
    assert form.render(profiles.build(CATALOG, availability, USER, held=0)) == first
    changed = form.render(
        profiles.build(CATALOG, {"t4": Availability(free=2, total=8, free_now=2)}, USER, held=0)
    )
    assert "3 of 8 free now" in first and "2 of 8 free now" in changed
    assert "3 of 8 free" not in changed


def test_each_card_preselects_its_default_environment_the_cpu_card_the_cpu_one():
    built = {p["slug"]: p for p in profiles.build(CATALOG, {}, USER, held=0)}
    defaults = {
        slug: [k for k, c in p["profile_options"]["environment"]["choices"].items() if c["default"]]
        for slug, p in built.items()
    }
    assert (defaults["cpu"], defaults["t4"], defaults["u50"]) == (["cpu"], ["ml-gpu"], ["fpga"])
    html = form.render(list(built.values()))
    select = html.split('id="environment--cpu"', 1)[1].split("</select>", 1)[0]
    assert '<option value="cpu" selected>' in select


def card_facts(html: str) -> dict[str, str]:
    """Each card's facts line, whitespace collapsed, by accelerator key."""
    return {
        m[0]: " ".join(m[1].split())
        for m in re.findall(
            r'data-accelerator="([^"]+)".*?<div class="aiinfn-facts">(.*?)</div>', html, re.S
        )
    }


def test_cards_say_free_now_free_if_batch_jobs_stop_and_how_many_jobs_stop():
    availability = {
        "t4": Availability(free=5, total=8, batch=4, batch_jobs=3, free_now=2),
        "rtx5000": Availability(free=1, total=2, batch=1, batch_jobs=1, free_now=0),
        "a100": Availability(free=0, total=4, batch=2, batch_jobs=1, free_now=0),
        "a30": Availability(free=0, total=2, free_now=0),
        "a100-mig-3g-40gb": Availability(free=1, total=1, free_now=1),
    }
    built = profiles.build(CATALOG, availability, USER, held=0)
    html = form.render(built)
    text = {key: re.sub(r"<[^>]+>", "", facts) for key, facts in card_facts(html).items()}
    assert text["t4"] == "2 of 8 free now · 5 if batch jobs stop (3 jobs would be stopped) · 16 GB"
    assert text["rtx5000"] == (
        "0 of 2 free now · 1 if batch jobs stop (1 job would be stopped) · 16 GB"
    )
    assert text["a100"] == "0 of 4 free now · 80 GB · busy: none free, even if batch jobs stop"
    assert text["a30"] == "0 of 2 free now · 24 GB · busy: none free now"
    assert text["a100-mig-3g-40gb"].startswith("1 of 1 free now · 40 GB")
    assert (
        '<span class="aiinfn-availability" data-free="5" data-total="8" data-free-now="2" '
        'data-batch-jobs="3">' in html
    )
    # Enabled as long as a notebook can get a unit (batch jobs yield); counts that could only
    # be refused are not offered.
    cards = {p["slug"]: p for p in built}
    enabled = [k for k, card in cards.items() if card["aiinfn"]["disabled_reason"] is None]
    assert enabled == ["cpu", "t4", "rtx5000", "a100-mig-3g-40gb"]
    assert list(cards["rtx5000"]["profile_options"]["count"]["choices"]) == ["1"]
    assert list(cards["t4"]["profile_options"]["count"]["choices"]) == ["1", "2"]
    assert 'name="count--rtx5000"' in html and 'name="count--a100"' not in html


def test_card_facts_are_joined_without_a_leading_separator():
    availability = {"t4": Availability(free=3, total=8, free_now=3)}
    html = form.render(profiles.build(CATALOG, availability, CPU_ONLY, held=0))
    facts = card_facts(html)
    assert facts["cpu"] == "No accelerator; runs on the service nodes."
    t4 = re.sub(r"<[^>]+>", "", facts["t4"])
    assert t4 == "3 of 8 free now · 16 GB · not available to your groups"
    assert not any(re.sub(r"<[^>]+>", "", f).lstrip().startswith("·") for f in facts.values())


def test_the_form_shows_a_refusal_message_only():
    error = to_http_error(
        UserError(
            "NVIDIA A30: not available to your groups",
            reason="policy",
            status=403,
            log_detail="alice asked for a30; groups []",
        )
    )
    assert format_exception(error) == ("NVIDIA A30: not available to your groups", None)
    assert error.status_code == 403


def test_a_link_query_becomes_options_to_prefill_the_form_with():
    query = {"accelerator": ["a30"], "count": ["1"], "size": ["small"], "_xsrf": ["x"]}
    assert profiles.options_from_query(query) == {"accelerator": "a30", "count": 1, "size": "small"}
    assert profiles.options_from_query({"_xsrf": ["x"]}) == {}
    assert profiles.options_from_query({"opt-accelerator": ["t4"]}) == {"accelerator": "t4"}


@pytest.mark.parametrize(
    "query, message",
    [
        ({"accelerator": ["a30"], "namespace": ["kube-system"]}, "unknown option 'namespace'"),
        ({"accelerator": ["a30", "t4"]}, "at most once"),
        ({"accelerator": ["t4"], "count": ["1e3"]}, "count must be a whole number"),
        ({"environment--t4": ["ml-gpu"]}, "unknown option 'environment--t4'"),
    ],
)
def test_bad_link_queries_are_refused(query, message):
    with pytest.raises(UserError, match=message) as error:
        profiles.options_from_query(query)
    assert error.value.status == 400
