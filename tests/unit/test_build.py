"""The build step explains a missing or old Go and notices half-built components."""

import os

import pytest
from aiinfn_dev.devcluster import build, versions
from aiinfn_dev.devcluster.errors import DevClusterError


def test_missing_go_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DevClusterError, match=r"Go toolchain is missing: install Go >= 1\.26"):
        build.check_go()


def test_old_go_names_the_version(tmp_path, monkeypatch):
    fake = tmp_path / "go"
    fake.write_text("#!/bin/sh\necho 'go version go1.22.4 linux/amd64'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}/usr/bin:/bin")
    with pytest.raises(DevClusterError, match=r"Go go1\.22 is too old: .* needs Go >= 1\.26"):
        build.check_go()


def test_half_built_components_count_as_missing(tmp_path):
    paths = versions.binaries(tmp_path)
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    for path in {p.parent.parent for p in paths.values()}:
        (path / ".done").write_text("")
    assert build.missing_binaries(tmp_path) == []
    (paths["etcd"].parent.parent / ".done").unlink()
    paths["kwok"].unlink()
    assert build.missing_binaries(tmp_path) == ["etcd", "kwok"]
