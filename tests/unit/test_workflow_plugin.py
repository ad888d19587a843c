"""Snakemake finds the executor plugin by its module name, with its settings as command-line
options (`snakemake --executor aiinfn --aiinfn-...`)."""

from __future__ import annotations

import argparse

from snakemake_interface_executor_plugins.registry import ExecutorPluginRegistry


def test_snakemake_finds_the_plugin_and_its_options():
    registry = ExecutorPluginRegistry()
    assert "aiinfn" in registry.get_registered_plugins()
    plugin = registry.get_plugin("aiinfn")
    assert plugin.common_settings.non_local_exec and not plugin.common_settings.implies_no_shared_fs
    parser = argparse.ArgumentParser()
    plugin.register_cli_args(parser, "executor")
    options = {a.dest for a in parser._actions}
    assert {
        "aiinfn_url",
        "aiinfn_working_dir",
        "aiinfn_environment",
        "aiinfn_project",
        "aiinfn_priority",
        "aiinfn_log_lines",
    } <= options
