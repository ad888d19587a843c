"""The catalog is validated at start; a bad file names the key and why."""

import copy

import pytest
import yaml

from aiinfn_hub import catalog

DEFAULT = yaml.safe_load(catalog.default_path().read_text())


def test_default_catalog_describes_the_ai_infn_farm():
    c = catalog.load(catalog.default_path())
    assert list(c.accelerators) == ["cpu", "t4", "rtx5000", "a100", "a30", "a100-mig-1g-10gb",
                                    "a100-mig-2g-20gb", "a100-mig-3g-40gb", "u50", "u250", "v70"]
    assert c.accelerators["a100-mig-3g-40gb"] == catalog.Accelerator(
        key="a100-mig-3g-40gb", display_name="A100 MIG slice 3g.40gb", kind="mig",
        resource="nvidia.com/mig-3g.40gb", node_labels={}, memory="40 GB", description="", counts=(1,))
    assert c.accelerators["a100"].offered_by({"nvidia.com/gpu.product": "NVIDIA-A100-80GB-PCIe", "x": "y"})
    assert not c.accelerators["a100"].offered_by({"nvidia.com/gpu.product": "Tesla-T4"})
    assert [e.key for e in c.environments_for("fpga")] == ["fpga"]
    assert c.custom_images.allows("harbor.cloud.infn.it/ai-infn-users/alice/my-env:v1")
    assert not c.custom_images.allows("harbor.cloud.infn.it/ai-infn-users/alice/my-env:v1 ; rm")
    assert not c.custom_images.allows("evil.example/harbor.cloud.infn.it/ai-infn-users/a/b:v1")


def _broken(change):
    document = copy.deepcopy(DEFAULT)
    change(document)
    return document


@pytest.mark.parametrize("change, message", [
    (lambda d: d["accelerators"]["t4"].update(colour="green"), r"accelerators\.t4: unknown field\(s\) colour"),
    (lambda d: d["accelerators"]["t4"].pop("kind"), r"accelerators\.t4: missing field\(s\) kind"),
    (lambda d: d["accelerators"]["t4"].update(kind="tpu"), r"accelerators\.t4\.kind: must be one of"),
    (lambda d: d["accelerators"]["t4"].update(resource="gpu"), r"accelerators\.t4\.resource"),
    (lambda d: d["accelerators"]["t4"].update(counts=[1, True]), r"accelerators\.t4\.counts"),
    (lambda d: d["accelerators"]["t4"]["node_labels"].update({"nvidia.com/gpu.count": 8}),
     r"node_labels\.nvidia\.com/gpu\.count: must be a label value"),
    (lambda d: d["accelerators"].update({"Bad_Key": {"display_name": "x", "kind": "cpu"}}), r"accelerators: keys are"),
    (lambda d: d["environments"]["ml-gpu"].update(image="pytorch"), r"environments\.ml-gpu\.image"),
    (lambda d: d["environments"]["ml-gpu"].update(kinds=["gpu", "quantum"]), r"environments\.ml-gpu\.kinds"),
    (lambda d: d["sizes"]["gpu"].update(default="huge"), r"sizes\.gpu\.default: 'huge' is not one of"),
    (lambda d: d["sizes"]["gpu"]["choices"]["small"].update(memory="lots"), r"sizes\.gpu\.choices\.small\.memory"),
    (lambda d: d["sizes"].pop("fpga"), r"sizes: missing sizes for kind 'fpga'"),
    (lambda d: d["custom_images"]["patterns"].append("(unclosed"), r"custom_images\.patterns\[1\]: is not a regular"),
    (lambda d: d["environments"].pop("fpga"), r"accelerators\.u50: no environment supports kind 'fpga'"),
    (lambda d: d.update(extra=1), r"top level: unknown field\(s\) extra"),
])
def test_bad_catalogs_name_the_key(change, message):
    with pytest.raises(catalog.CatalogError, match=message):
        catalog.parse(_broken(change))


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(catalog.CatalogError, match="cannot read"):
        catalog.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("accelerators: [unclosed")
    with pytest.raises(catalog.CatalogError, match="not valid YAML"):
        catalog.load(bad)


@pytest.mark.parametrize("text, value", [("4", 4.0), ("500m", 0.5), ("16Gi", 16 * 2**30), ("1.5", 1.5)])
def test_quantities(text, value):
    assert catalog.quantity(text) == value


def test_projects_are_named_groups_and_the_rest_are_system_groups():
    c = catalog.load(catalog.default_path())
    assert [p.key for p in c.projects_of(["admins", "lhcb-flashsim", "cms-ml", "nobody"])] == ["cms-ml", "lhcb-flashsim"]
    assert c.projects["cms-ml"] == catalog.Project("cms-ml", "CMS machine learning")


@pytest.mark.parametrize("key, fragment", [
    ("/cms", "leading '/'"), ("a/../b", "'..'"), ("g\u0435", "CYRILLIC"), ("", "empty"),
])
def test_bad_project_names_are_refused(key, fragment):
    document = copy.deepcopy(DEFAULT)
    document["projects"] = {key: {"display_name": "x"}}
    with pytest.raises(catalog.CatalogError, match=fragment):
        catalog.parse(document)
