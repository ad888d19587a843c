"""The job service's settings: read from the hub's configuration, a bad key stops the start."""

import pytest
from kubernetes_asyncio import client
from traitlets import TraitError
from traitlets.config import Config

from aiinfn_hub.services import base
from aiinfn_hub.services.jobs import openapi
from aiinfn_hub.services.jobs.app import AiInfnJobs


def app(**sections) -> AiInfnJobs:
    return AiInfnJobs(config=Config(sections))


async def test_defaults_come_from_the_platform_settings():
    jobs = app(
        KubeSpawner={"namespace": "jhub"}, AiInfnPlatform={"accelerator_node_labels": ["x.io/gpu"]}
    )
    assert jobs.namespace == "jhub"
    async with client.ApiClient() as api_client:
        service = jobs.service(api_client)
        juicefs = app(AiInfnStorage={"juicefs_claim": "aiinfn-juicefs"}).service(api_client)
    assert service.build.accelerator_node_labels == ("x.io/gpu",)
    assert service.rules.storage_kinds == ("home", "projects", "scratch")
    assert service.rules.priorities == {
        "low": "aiinfn-low",
        "normal": "aiinfn-normal",
        "high": "aiinfn-high",
    }
    assert set(service.platform.catalog.projects) == {"cms-ml", "lhcb-flashsim", "qml"}
    assert "juicefs" in juicefs.rules.storage_kinds
    assert [(s.name, s.flavor, s.max_runtime_seconds) for s in service.rules.sites] == [
        ("infn-t1-htcondor", "interlink-infn-t1", None),
        ("podman-vm", "vk-podman-vm", None),
        ("leonardo-slurm", "vk-leonardo-slurm", 86400),
        ("hpc-bubble-slurm", "vk-hpc-bubble-slurm", 172800),
    ]


@pytest.mark.parametrize(
    "sections, message",
    [
        ({"AiInfnJobs": {"priorities": {"low": "Not A Class"}}}, "AiInfnJobs.priorities"),
        ({"AiInfnJobs": {"priorities": {}}}, "offer at least one priority"),
        ({"AiInfnJobs": {"namespace": "Bad_Namespace"}}, "AiInfnJobs.namespace"),
        ({"AiInfnJobs": {"sandbox_path": "relative/path"}}, "AiInfnJobs.sandbox_path"),
        ({"AiInfnJobs": {"offload_accelerator_kinds": ["tpu"]}}, r"unknown kind\(s\) tpu"),
        ({"AiInfnJobs": {"backoff_limit": 1000}}, "backoff_limit"),
        ({"AiInfnJobs": {"rate_limit": 0.0}}, "rate_limit"),
        (
            {"AiInfnJobs": {"sites": {"vm": {"flavor": "f", "accepts_accelerator_kinds": ["x"]}}}},
            r"AiInfnJobs.sites: site 'vm': accepts_accelerator_kinds must be a list of",
        ),
        (
            {"AiInfnJobs": {"juicefs_credentials_secret": "JuiceFS"}},
            r"AiInfnJobs.juicefs_credentials_secret: 'JuiceFS' is not a Secret name",
        ),
    ],
)
def test_bad_settings_name_their_key(sections, message):
    with pytest.raises(TraitError, match=message):
        app(**sections)


@pytest.mark.parametrize(
    "sections, message",
    [
        (
            {"AiInfnJobs": {"default_priority": "urgent"}},
            "AiInfnJobs.default_priority: 'urgent' is not in priorities",
        ),
        (
            {"AiInfnPlatform": {"group_policies": {"g": {"accelerators": ["h100"]}}}},
            "not in the catalog: h100",
        ),
        (
            {"AiInfnPlatform": {"catalog_file": "/nonexistent.yaml"}},
            "cannot read /nonexistent.yaml",
        ),
        (
            {"AiInfnJobs": {"project_secrets": {"atlas": ["db"]}}},
            r"AiInfnJobs.project_secrets: project 'atlas' is not in the catalog \(projects: cms-ml",
        ),
        (
            {"AiInfnJobs": {"project_secrets": {"qml": ["Not_A_Name"]}}},
            r"AiInfnJobs.project_secrets: project 'qml': 'Not_A_Name' is not a Secret name",
        ),
        (
            {"AiInfnJobs": {"project_secrets": {"qml": ["aiinfn-token-alice"]}}},
            "is one of the platform's own Secrets",
        ),
    ],
)
async def test_platform_mistakes_stop_the_service(sections, message):
    async with client.ApiClient() as api_client:
        with pytest.raises(TraitError, match=message):
            app(**sections).service(api_client)


async def test_data_settings_reach_the_rules():
    async with client.ApiClient() as api_client:
        service = app(
            AiInfnJobs={
                "project_secrets": {"qml": ["qml-db", "qml-s3"]},
                "juicefs_credentials_secret": "juicefs-remote",
            }
        ).service(api_client)
        default = app().service(api_client)
    assert service.rules.project_secrets == {"qml": ("qml-db", "qml-s3")}
    assert service.rules.juicefs_credentials_secret == "juicefs-remote"
    assert (default.rules.project_secrets, default.rules.juicefs_credentials_secret) == ({}, None)


def test_the_config_file_path_is_only_known_inside_a_hub(monkeypatch):
    assert base.hub_config_file() == ""
    monkeypatch.setenv(base.HUB_CONFIG_ENV, "/etc/jupyterhub/jupyterhub_config.py")
    assert AiInfnJobs().hub_config == "/etc/jupyterhub/jupyterhub_config.py"


def test_a_missing_hub_configuration_is_a_clear_exit(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        AiInfnJobs().initialize(["--hub-config", str(tmp_path / "nope.py")])


def test_the_openapi_document_describes_every_route():
    document = openapi.document()
    assert set(document["paths"]) == {
        "/api/jobs",
        "/api/clones",
        "/api/jobs/{job_id}",
        "/api/jobs/{job_id}/logs",
        "/api/jobs/{job_id}/resubmit",
    }
    schemas = document["components"]["schemas"]
    assert schemas["JobRequest"]["additionalProperties"] is False
    assert (
        "server" in schemas["CloneRequest"]["properties"]
        and "image" not in schemas["CloneRequest"]["properties"]
    )
