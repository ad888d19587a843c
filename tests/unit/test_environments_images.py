"""Custom images: the catalog's allowlist of registries and repositories (digest pinning
optional), applied where users type an image (the spawn form and REST options, and batch job
requests)."""

from __future__ import annotations

import copy

import pytest
import yaml

from aiinfn_hub import catalog, policy, profiles
from aiinfn_hub.catalog import CatalogError
from aiinfn_hub.errors import UserError
from aiinfn_hub.image_policy import ImageRule
from aiinfn_hub.services.base import HubUser
from aiinfn_hub.services.jobs.plan import resolve
from aiinfn_hub.services.jobs.request import JobRequest
from tests import unqueued_job

DIGEST = "@sha256:" + "ab" * 32
SHIPPED = yaml.safe_load(catalog.default_path().read_text())


def _catalog(custom: dict) -> catalog.Catalog:
    document = copy.deepcopy(SHIPPED)
    document["custom_images"] = custom
    return catalog.parse(document)


@pytest.mark.parametrize(
    ("image", "allowed"),
    [
        ("harbor.example.org/users/alice/env:1.0", True),
        ("harbor.example.org/users/alice/deep/env:1.0", True),
        ("harbor.example.org/users/alice" + DIGEST, True),
        ("harbor.example.org/users:1.0", False),  # '**' needs one segment below
        ("harbor.example.org/other/alice/env:1.0", False),
        ("evil.example.org/users/alice/env:1.0", False),
        ("harbor.example.org.evil.io/users/alice/env:1.0", False),
        ("harbor.example.org/users/alice/env:1.0 --privileged", False),
        ("users/alice/env:1.0", False),  # no registry: Docker Hub
    ],
)
def test_a_registry_and_repository_prefix(image: str, allowed: bool) -> None:
    assert ImageRule("harbor.example.org", "users/**").allows(image) is allowed


def test_star_segments_and_digest_pinning() -> None:
    rule = ImageRule("registry.local:5000", "ai-infn/*/notebook", digest=True)
    assert rule.allows("registry.local:5000/ai-infn/cms/notebook" + DIGEST)
    assert not rule.allows("registry.local:5000/ai-infn/cms/notebook:1.0")  # not pinned
    assert not rule.allows("registry.local:5000/ai-infn/cms/x/notebook" + DIGEST)
    assert not rule.allows("registry.local/ai-infn/cms/notebook" + DIGEST)  # another port


def test_the_catalog_takes_an_allowlist_besides_or_instead_of_patterns() -> None:
    allow = [{"registry": "harbor.example.org", "repository": "users/*/*", "digest": True}]
    built = _catalog({"allow": allow, "kinds": ["cpu", "gpu"]})
    assert built.custom_images.allow == (ImageRule("harbor.example.org", "users/*/*", True),)
    assert built.custom_images.patterns == ()
    assert built.custom_images.allows("harbor.example.org/users/alice/env" + DIGEST)
    assert not built.custom_images.allows("harbor.example.org/users/alice/env:1")
    both = _catalog({"allow": allow, "patterns": ["r\\.io/x/y:1"], "kinds": ["cpu"]})
    assert both.custom_images.allows("r.io/x/y:1")


@pytest.mark.parametrize(
    ("custom", "problem"),
    [
        ({"kinds": ["cpu"]}, "give patterns or allow"),
        ({"allow": [{"registry": "Harbor.org", "repository": "a"}], "kinds": ["cpu"]}, "registry"),
        ({"allow": [{"registry": "h.org", "repository": "a/**/b"}], "kinds": ["cpu"]}, "repos"),
        ({"allow": [{"registry": "h.org", "repository": "a", "digest": "yes"}], "kinds": ["cpu"]},
         "digest"),
        ({"allow": [{"registry": "h.org", "repo": "a"}], "kinds": ["cpu"]}, "unknown field"),
    ],
)  # fmt: skip
def test_a_bad_allowlist_is_refused_naming_the_field(custom: dict, problem: str) -> None:
    with pytest.raises(CatalogError, match=problem):
        _catalog(custom)


def test_the_spawn_applies_the_allowlist() -> None:
    allow = [{"registry": "harbor.example.org", "repository": "users/**", "digest": True}]
    built = _catalog({"allow": allow, "kinds": ["gpu"]})
    rules = policy.parse_rules(
        {"accelerators": "*", "environments": "*", "custom_images": True, "max_accelerators": 1},
        built,
        "default",
    )
    user = policy.for_user(rules, {}, [])
    image = "harbor.example.org/users/alice/env" + DIGEST
    plan = profiles.resolve(built, user, {"accelerator": "t4", "image": image}, 0)
    assert plan.image == image
    for refused, accelerator in ((image.split("@")[0] + ":1", "t4"), (image, "cpu")):
        with pytest.raises(UserError, match="custom image is not allowed"):
            profiles.resolve(built, user, {"accelerator": accelerator, "image": refused}, 0)


def _job_plan(built: catalog.Catalog, custom_images: bool, **fields):
    rules = policy.parse_rules(
        {
            "accelerators": "*",
            "environments": "*",
            "custom_images": custom_images,
            "max_accelerators": 1,
        },
        built,
        "x",
    )
    request = JobRequest(name="train", command=["python", "train.py"], **fields)
    caller = HubUser("alice", frozenset({"cms-ml"}), False)
    return resolve(request, caller, built, policy.for_user(rules, {}, []), unqueued_job.RULES)


def test_a_batch_job_applies_the_same_allowlist_and_group_permission() -> None:
    allow = [{"registry": "harbor.example.org", "repository": "users/**"}]
    built = _catalog({"allow": allow, "kinds": ["gpu"]})
    image = "harbor.example.org/users/alice/env:1.0"
    plan = _job_plan(built, True, image=image, accelerator="t4")
    assert plan.image == image
    with pytest.raises(UserError, match="not allowed for NVIDIA Tesla T4") as refused:
        _job_plan(built, True, image="evil.example.org/users/alice/env:1.0", accelerator="t4")
    assert refused.value.status == 400
    with pytest.raises(UserError, match="custom image is not allowed"):
        _job_plan(built, True, image=image)  # CPU only: not among the allowlist's kinds
    with pytest.raises(UserError, match="not available to your groups") as denied:
        _job_plan(built, False, image=image, accelerator="t4")
    assert denied.value.status == 403
