"""Platform settings: one Configurable the spawner and the services read the same way."""

import logging

import pytest
from traitlets.config import Config

from aiinfn_hub import hubstate, platform_config
from aiinfn_hub.catalog import CatalogError
from aiinfn_hub.platform_config import AiInfnPlatform


def test_defaults_load_the_bundled_catalog():
    settings = AiInfnPlatform(config=Config())
    assert settings.reservation_taint_key == "reserved"
    assert settings.notebook_priority_class == "aiinfn-notebook"
    state = hubstate.load(settings)
    assert set(state.catalog.projects) == {"cms-ml", "lhcb-flashsim", "qml"}
    assert state.group_rules == {}


def test_the_old_spawner_section_still_applies_and_is_named_as_deprecated(caplog):
    config = Config()
    config.AiInfnSpawner.reservation_taint_key = "old"
    config.AiInfnSpawner.cpu_on_accelerator_nodes = True
    config.AiInfnSpawner.accelerator_node_labels = ["a.io/gpu"]
    config.AiInfnPlatform.cpu_on_accelerator_nodes = False
    config.AiInfnSpawner.fail_fast_seconds = 5.0  # a spawner setting: not the platform's
    with caplog.at_level(logging.WARNING):
        settings = AiInfnPlatform(config=config)
    assert settings.reservation_taint_key == "old"
    assert settings.accelerator_node_labels == ["a.io/gpu"]
    assert settings.cpu_on_accelerator_nodes is False  # the new section wins
    deprecated = sorted(r.getMessage() for r in caplog.records if "deprecated" in r.getMessage())
    assert deprecated == [
        "c.AiInfnSpawner.accelerator_node_labels is deprecated: set "
        "c.AiInfnPlatform.accelerator_node_labels",
        "c.AiInfnSpawner.reservation_taint_key is deprecated: set "
        "c.AiInfnPlatform.reservation_taint_key",
    ]


def test_a_lazy_old_value_is_resolved_against_the_default():
    config = Config()
    config.AiInfnSpawner.accelerator_node_labels.append("a.io/gpu")
    assert AiInfnPlatform(config=config).accelerator_node_labels == [
        "nvidia.com/gpu.present",
        "xilinx.com/fpga.board",
        "a.io/gpu",
    ]


def test_a_missing_catalog_fails_with_its_path(tmp_path):
    config = Config()
    config.AiInfnPlatform.catalog_file = str(tmp_path / "none.yaml")
    with pytest.raises(CatalogError, match="none.yaml"):
        hubstate.load_from_config(config)


def test_the_notebook_namespace_is_kubespawner_s(monkeypatch, tmp_path):
    namespace = platform_config.notebook_namespace
    assert namespace(Config({"KubeSpawner": {"namespace": "jhub"}})) == "jhub"
    assert (
        namespace(
            Config({"KubeSpawner": {"namespace": "jhub"}, "AiInfnSpawner": {"namespace": "ai"}})
        )
        == "ai"
    )
    pod_file = tmp_path / "namespace"
    pod_file.write_text("hub-ns\n")
    monkeypatch.setattr(platform_config, "SERVICE_ACCOUNT_NAMESPACE", str(pod_file))
    assert namespace(Config()) == "hub-ns"
    monkeypatch.setattr(platform_config, "SERVICE_ACCOUNT_NAMESPACE", str(tmp_path / "no"))
    assert namespace(Config()) == "default"
