"""docs/config.md is what `aiinfn-hub config-reference` prints today, and every setting of the
product's configurable classes has help to print."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest
from traitlets.config import Configurable

import aiinfn_hub
from aiinfn_hub import admin_cli, config_reference
from aiinfn_hub.services.jobs.app import AiInfnJobs

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTED = config_reference.classes()


def product_configurables() -> set[type]:
    """Every Configurable defined in aiinfn_hub that adds settings of its own."""
    found = set()
    for module_info in pkgutil.walk_packages(aiinfn_hub.__path__, "aiinfn_hub."):
        if module_info.name.endswith(".__main__"):  # running it starts the service
            continue
        module = importlib.import_module(module_info.name)
        found |= {
            cls
            for _, cls in inspect.getmembers(module, inspect.isclass)
            if cls.__module__ == module.__name__
            and issubclass(cls, Configurable)
            and cls.class_own_traits(config=True)
        }
    return found


def test_docs_config_md_is_current():
    text = (ROOT / "docs" / "config.md").read_text()
    assert text == config_reference.render(), (
        "docs/config.md is out of date: run `aiinfn-hub config-reference > docs/config.md`"
    )


def test_every_configurable_class_of_the_product_is_documented():
    assert product_configurables() == set(DOCUMENTED)


@pytest.mark.parametrize("cls", DOCUMENTED, ids=lambda cls: cls.__name__)
def test_every_setting_and_class_says_what_it_is(cls):
    assert config_reference.summary(cls)
    missing = [
        name for name, trait in cls.class_own_traits(config=True).items() if not trait.help.strip()
    ]
    assert missing == [], f"{cls.__name__}: settings without help"


def test_the_reference_names_no_machine_path_and_no_address():
    text = config_reference.render()
    assert str(ROOT) not in text and config_reference.PACKAGE_DIR not in text
    assert " at 0x" not in text
    assert "- Default: `catalogs/ai-infn.yaml` in the installed aiinfn_hub package\n" in text


def test_defaults_computed_at_start_are_not_shown_as_their_placeholder():
    section = config_reference.trait_section(
        AiInfnJobs, "namespace", AiInfnJobs.class_traits()["namespace"]
    )
    assert section[:4] == [
        "### `c.AiInfnJobs.namespace`",
        "",
        "- Type: `Unicode`",
        "- Default: computed at start (see the description)",
    ]


def test_help_is_escaped_outside_code_spans_only():
    assert (
        config_reference.escape('at <root>/x, `<prefix>-*` or "*"')
        == 'at \\<root>/x, `<prefix>-*` or "\\*"'
    )


def test_code_spans_hold_backticks():
    assert config_reference.code("a") == "`a`"
    assert config_reference.code("a`b") == "``a`b``"
    assert config_reference.code("`a") == "`` `a ``"


def test_the_command_prints_the_reference(capsys):
    assert admin_cli.main(["config-reference"]) == 0
    out, err = capsys.readouterr()
    assert (out, err) == (config_reference.render(), "")
