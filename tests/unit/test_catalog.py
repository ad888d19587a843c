"""The catalog is validated at start; a bad file names the file, the path in it and what is
allowed, a line per problem; its JSON Schema for editors is published in docs/."""

import copy
import dataclasses
import json
from pathlib import Path

import jsonschema
import pydantic
import pytest
import yaml

from aiinfn_hub import admin_files, catalog, policy

DEFAULT = yaml.safe_load(catalog.default_path().read_text())
DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_default_catalog_describes_the_ai_infn_farm():
    c = catalog.load(catalog.default_path())
    assert list(c.accelerators) == [
        "cpu",
        "t4",
        "rtx5000",
        "a100",
        "a30",
        "a100-mig-1g-10gb",
        "a100-mig-2g-20gb",
        "a100-mig-3g-40gb",
        "u50",
        "u250",
        "v70",
    ]
    assert c.accelerators["a100-mig-3g-40gb"] == catalog.Accelerator(
        key="a100-mig-3g-40gb",
        display_name="A100 MIG slice 3g.40gb",
        kind="mig",
        resource="nvidia.com/mig-3g.40gb",
        node_labels={},
        memory="40 GB",
        description="",
        counts=(1,),
    )
    assert c.accelerators["a100"].offered_by(
        {"nvidia.com/gpu.product": "NVIDIA-A100-80GB-PCIe", "x": "y"}
    )
    assert not c.accelerators["a100"].offered_by({"nvidia.com/gpu.product": "Tesla-T4"})
    assert [e.key for e in c.environments_for("fpga")] == ["fpga"]
    assert c.custom_images.allows("harbor.cloud.infn.it/ai-infn-users/alice/my-env:v1")
    assert not c.custom_images.allows("harbor.cloud.infn.it/ai-infn-users/alice/my-env:v1 ; rm")
    assert not c.custom_images.allows("evil.example/harbor.cloud.infn.it/ai-infn-users/a/b:v1")


def _broken(change):
    document = copy.deepcopy(DEFAULT)
    change(document)
    return document


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda d: d["accelerators"]["t4"].update(colour="green"),
            r"accelerators\.t4: unknown field\(s\) colour "
            r"\(allowed: display_name, kind, resource, ",
        ),
        (
            lambda d: d["accelerators"]["t4"].pop("kind"),
            r"accelerators\.t4: missing field\(s\) kind$",
        ),
        (
            lambda d: d["accelerators"]["t4"].update(kind="tpu"),
            r"accelerators\.t4\.kind: must be an accelerator kind \(allowed: cpu, gpu, mig, fpga\)",
        ),
        (
            lambda d: d["accelerators"]["t4"].update(resource="gpu"),
            r"accelerators\.t4\.resource: "
            r"must be an extended resource name such as nvidia\.com/gpu",
        ),
        (lambda d: d["accelerators"]["t4"].pop("resource"), r"accelerators\.t4\.resource: must be"),
        (
            lambda d: d["accelerators"]["cpu"].update(resource="nvidia.com/gpu"),
            r"accelerators\.cpu\.resource: CPU only takes no resource",
        ),
        (
            lambda d: d["accelerators"]["cpu"].update(node_labels={"a": "b"}),
            r"accelerators\.cpu\.node_labels: CPU only takes no node_labels",
        ),
        (
            lambda d: d["accelerators"]["t4"].update(counts=[1, True]),
            r"accelerators\.t4\.counts\[1\]: must be a whole number 1\.\.16 \(CPU only: 0\)",
        ),
        (
            lambda d: d["accelerators"]["t4"].update(counts=[0, 1]),
            r"accelerators\.t4\.counts: must list whole numbers 1\.\.16 \(CPU only: \[0\]\)",
        ),
        (
            lambda d: d["accelerators"]["cpu"].update(counts=[1]),
            r"accelerators\.cpu\.counts: must list",
        ),
        (
            lambda d: d["accelerators"]["t4"].update(counts=[]),
            r"accelerators\.t4\.counts: must not be empty",
        ),
        (
            lambda d: d["accelerators"]["t4"]["node_labels"].update({"nvidia.com/gpu.count": 8}),
            r"node_labels\.nvidia\.com/gpu\.count: must be a label value \(quote numbers\)",
        ),
        (
            lambda d: d["accelerators"]["t4"]["node_labels"].update({"no spaces": "x"}),
            r"accelerators\.t4\.node_labels\.no spaces: must be a label key",
        ),
        (
            lambda d: d["accelerators"].update({"Bad_Key": {"display_name": "x", "kind": "cpu"}}),
            r"accelerators\.Bad_Key: "
            r"must be a key of lower-case letters, digits and '-', at most 40",
        ),
        (
            lambda d: d["accelerators"]["a100-mig-2g-20gb"].update(
                resource="nvidia.com/mig-1g.10gb"
            ),
            r"accelerators\.a100-mig-2g-20gb\.resource: MIG profile a100-mig-1g-10gb has the same",
        ),
        (lambda d: d.update(accelerators={}), r"catalog: accelerators: must not be empty"),
        (
            lambda d: d["environments"]["ml-gpu"].update(image="pytorch"),
            r"environments\.ml-gpu\.image: must be a full image reference with a tag or digest",
        ),
        (
            lambda d: d["environments"]["ml-gpu"].update(kinds=["gpu", "quantum"]),
            r"environments\.ml-gpu\.kinds\[1\]: "
            r"must be an accelerator kind \(allowed: cpu, gpu, mig",
        ),
        (
            lambda d: d["environments"]["ml-gpu"].update(display_name=" "),
            r"environments\.ml-gpu\.display_name: "
            r"must be a non-empty string of at most 200 characters",
        ),
        (
            lambda d: d["sizes"]["gpu"].update(default="huge"),
            r"sizes\.gpu\.default: 'huge' is not one of its choices "
            r"\(allowed: small, medium, large\)",
        ),
        (
            lambda d: d["sizes"]["gpu"]["choices"]["small"].update(memory="lots"),
            r"sizes\.gpu\.choices\.small\.memory: "
            r"must be a Kubernetes quantity such as 4, 500m or 16Gi",
        ),
        (lambda d: d["sizes"].pop("fpga"), r"catalog: sizes: missing field\(s\) fpga$"),
        (
            lambda d: d["sizes"].update(tpu={}),
            r"sizes: unknown field\(s\) tpu \(allowed: cpu, gpu, mig, fpga\)",
        ),
        (
            lambda d: d["custom_images"]["patterns"].append("(unclosed"),
            r"custom_images\.patterns\[1\]: is not a regular expression",
        ),
        (
            lambda d: d["environments"].pop("fpga"),
            r"accelerators\.u50: no environment supports kind 'fpga' "
            r"\(environments and custom_images "
            r"support: cpu, gpu, mig\)",
        ),
        (
            lambda d: d.update(extra=1),
            r"catalog: top level: unknown field\(s\) extra \(allowed: "
            r"accelerators, environments, custom_images, sizes, projects\)",
        ),
        (lambda d: d.update(projects=[]), r"catalog: projects: must be a mapping"),
    ],
)
def test_bad_catalogs_name_the_path_and_what_is_allowed(change, message):
    with pytest.raises(catalog.CatalogError, match=message):
        catalog.parse(_broken(change))


def test_every_problem_is_a_line_naming_the_file(tmp_path):
    def change(d):
        d["accelerators"]["t4"].update(kind="tpu", counts=[1, True])
        d["sizes"].pop("mig")
        d["projects"]["qml"]["batch_share"] = "2"

    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(_broken(change), sort_keys=False))
    with pytest.raises(catalog.CatalogError) as raised:
        catalog.load(path)
    assert str(raised.value).splitlines() == [
        f"{path}: accelerators.t4.kind: must be an accelerator kind (allowed: cpu, gpu, mig, fpga)",
        f"{path}: accelerators.t4.counts[1]: must be a whole number 1..16 (CPU only: 0)",
        f"{path}: sizes: missing field(s) mig",
        f"{path}: projects.qml.batch_share: must be a whole number 0..1000",
    ]


def test_not_a_catalog_is_one_line():
    with pytest.raises(catalog.CatalogError) as raised:
        catalog.parse({"hub": {}, "proxy": {}, "sizes": {}}, "values.yaml")
    assert str(raised.value) == (
        "values.yaml: top level: unknown field(s) hub, proxy (allowed: accelerators, environments, "
        "custom_images, sizes, projects); missing field(s) accelerators, environments"
    )
    with pytest.raises(catalog.CatalogError, match="^catalog: top level: must be a mapping$"):
        catalog.parse(None)


def test_the_catalog_is_immutable():
    c = catalog.load(catalog.default_path())
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.accelerators["t4"].counts = (8,)
    with pytest.raises(pydantic.ValidationError):
        catalog.CatalogFile.model_validate(DEFAULT).sizes = None


def test_sizes_are_given_for_every_accelerator_kind():
    assert tuple(catalog.SizesEntry.model_fields) == catalog.ACCELERATOR_KINDS


@pytest.mark.parametrize("module, name", [(catalog, "catalog"), (policy, "policy")])
def test_the_published_json_schemas_are_what_the_models_say_today(module, name):
    published = DOCS / f"{name}.schema.json"
    assert published.read_text() == module.schema(), (
        f"docs/{name}.schema.json is out of date: "
        f"python -m aiinfn_hub.{name} --schema > docs/{name}.schema.json"
    )


def test_editors_validate_with_the_published_schema():
    """The shipped catalog passes the JSON Schema an editor applies, and mistakes do not."""
    text = catalog.default_path().read_text()
    assert text.splitlines()[0] == "# yaml-language-server: $schema=../../docs/catalog.schema.json"
    schema = json.loads((DOCS / "catalog.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    assert list(validator.iter_errors(DEFAULT)) == []
    broken = _broken(
        lambda d: (
            d["accelerators"]["t4"].update(kind="tpu"),
            d["projects"]["qml"].update(batch_share=True),
            d["sizes"]["cpu"]["choices"]["small"].update(cpu="lots"),
            d["accelerators"].update(Bad_Key={"display_name": "x"}),
        )
    )
    assert sorted(list(e.absolute_path) for e in validator.iter_errors(broken)) == [
        ["accelerators"],
        ["accelerators", "t4", "kind"],
        ["projects"],
        ["sizes", "cpu", "choices", "small", "cpu"],
    ]  # projects may be null
    policy_schema = json.loads((DOCS / "policy.schema.json").read_text())
    policies = jsonschema.Draft202012Validator(policy_schema)
    good = {"accelerators": "*", "max_accelerators": 2, "max_cpu": 8}
    assert list(policies.iter_errors(good)) == []
    assert len(list(policies.iter_errors({"accelerators": "t4", "custom_images": "yes"}))) == 2


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(catalog.CatalogError, match="cannot read"):
        catalog.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("accelerators: [unclosed")
    with pytest.raises(catalog.CatalogError, match="not valid YAML"):
        catalog.load(bad)


@pytest.mark.parametrize(
    "text, value", [("4", 4.0), ("500m", 0.5), ("16Gi", 16 * 2**30), ("1.5", 1.5)]
)
def test_quantities(text, value):
    assert admin_files.quantity(text) == value


def test_projects_are_named_groups_and_the_rest_are_system_groups():
    c = catalog.load(catalog.default_path())
    assert [p.key for p in c.projects_of(["admins", "lhcb-flashsim", "cms-ml", "nobody"])] == [
        "cms-ml",
        "lhcb-flashsim",
    ]
    assert c.projects["cms-ml"] == catalog.Project("cms-ml", "CMS machine learning")


@pytest.mark.parametrize(
    "key, fragment",
    [
        ("/cms", "leading '/'"),
        ("a/../b", "'..'"),
        ("g\u0435", "CYRILLIC"),
        ("", "empty"),
    ],
)
def test_bad_project_names_are_refused(key, fragment):
    document = copy.deepcopy(DEFAULT)
    document["projects"] = {key: {"display_name": "x"}}
    with pytest.raises(catalog.CatalogError, match=fragment):
        catalog.parse(document)
