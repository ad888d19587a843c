"""How the pod runner is wired in: kwok skips its pods, its settings, the secret volume writer."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from aiinfn_dev.devcluster import components, podrunner
from aiinfn_dev.devcluster.podplan import LocalImage, Mount
from aiinfn_dev.devcluster.podworker import image_root, write_volume_files

from aiinfn_hub import catalog


def _library(tmp_path):
    for relative in components.KWOK_STAGE_FILES:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        kind = "Node" if relative.startswith("node/") else "Pod"
        spec = {
            "resourceRef": {"apiGroup": "v1", "kind": kind},
            "selector": {
                "matchExpressions": [{"key": ".metadata.deletionTimestamp", "operator": "Exists"}]
            },
            "delay": {"durationMilliseconds": 1000},
        }
        path.write_text(
            yaml.safe_dump(
                {"kind": "Stage", "metadata": {"name": Path(relative).stem}, "spec": spec}
            )
        )
    return tmp_path


def test_kwok_pod_stages_leave_runner_images_alone(tmp_path):
    stages = {
        d["metadata"]["name"]: d for d in components.kwok_config(_library(tmp_path), ["b", "a"])[1:]
    }
    skip = {"key": ".spec.containers.[0].image", "operator": "NotIn", "values": ["a", "b"]}
    for name in ("pod-ready", "pod-complete", "pod-delete", "pod-stop"):
        assert stages[name]["spec"]["selector"]["matchExpressions"][-1] == skip
    # A remote site runs every pod bound to it, whatever its image: the runner leaves those.
    sites = [f"pod-{s}-vk-podman-vm" for s in ("ready", "complete", "fail")]
    remote = ["pod-delete-remote", "pod-stop-remote"]
    for name in ("node-initialize", "node-heartbeat-with-lease", *sites, *remote):
        assert skip not in stages[name]["spec"]["selector"]["matchExpressions"]


def _node(annotations, labels):
    return {"metadata": {"name": "n", "annotations": annotations, "labels": labels}}


def test_the_runner_plays_local_kwok_nodes_not_remote_sites():
    kwok = {"kwok.x-k8s.io/node": "fake"}
    virtual = {"virtual-node.interlink/type": "virtual-kubelet"}
    assert podrunner.plays_on(_node(kwok, {"kubernetes.io/hostname": "n"}))
    assert podrunner.plays_on(_node(kwok, None))
    assert not podrunner.plays_on(_node(kwok, virtual))
    assert not podrunner.plays_on(_node({}, {}))
    assert not podrunner.plays_on(_node(None, None))


def test_without_the_runner_kwok_plays_every_pod(tmp_path):
    for stage in components.kwok_config(_library(tmp_path))[1:]:
        keys = [e["key"] for e in stage["spec"]["selector"]["matchExpressions"]]
        assert components.RUNNER_IMAGE_KEY not in keys


def test_kwok_serves_logs_from_logs_objects():
    argv = components.kwok_argv(
        Path("/bin/kwok"), components.Layout(Path("/c")), components.Ports(16443, 1, 2, 3, 4, 5)
    )
    assert "--enable-crds=Logs" in argv
    crd = components.kwok_logs_crd()
    assert crd["metadata"]["name"] == "logs.kwok.x-k8s.io"
    assert crd["spec"]["names"]["plural"] == "logs" and crd["spec"]["scope"] == "Namespaced"
    assert [v["name"] for v in crd["spec"]["versions"]] == ["v1alpha1"]


def test_settings_map_every_catalog_environment_to_the_notebook_env(tmp_path):
    env = tmp_path / "nbenv"
    env.mkdir()
    (env / "pyvenv.cfg").write_text("home = /opt/python/bin\n")
    settings = podrunner.settings_for(
        Path("/k"), Path("/state"), env, catalog.default_path(), Path("/src"), Path("/claims")
    )
    images = {e.image for e in catalog.load(catalog.default_path()).environments.values()}
    assert set(settings.images) == images
    config = "/src/images/notebook/jupyter"  # the images' Jupyter configuration, from the checkout
    assert set(settings.images.values()) == {LocalImage(prefix=str(env), jupyter_config=config)}
    assert settings.images[images.pop()].env()["JUPYTER_CONFIG_PATH"] == config
    assert {"/usr", "/etc", "/opt", "/src"} <= set(settings.host_paths)
    assert str(env) in settings.host_paths and "/opt/python" not in settings.host_paths
    assert podrunner.Settings.from_json(settings.to_json()) == settings


def test_notebook_env_needs_jupyterhub_singleuser(tmp_path):
    assert "no notebook environment" in podrunner.notebook_env_problem(tmp_path)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "jupyterhub-singleuser").touch()
    assert podrunner.notebook_env_problem(tmp_path) is None


def test_secret_volume_is_written_like_the_kubelets_atomic_writer(tmp_path):
    volume = tmp_path / "tok"
    assert write_volume_files(
        volume, {"access_token": (b"one", 0o440), "dir/key": (b"k", 0o600)}, None
    )
    assert sorted(os.listdir(volume))[-3:] == ["..data", "access_token", "dir"]
    assert os.readlink(volume / "access_token") == "..data/access_token"
    assert (volume / "access_token").read_bytes() == b"one"
    assert (volume / "access_token").stat().st_mode & 0o777 == 0o440
    first = os.readlink(volume / "..data")

    assert not write_volume_files(
        volume, {"access_token": (b"one", 0o440), "dir/key": (b"k", 0o600)}, None
    )
    assert write_volume_files(volume, {"access_token": (b"two", 0o440)}, None)
    assert (volume / "access_token").read_bytes() == b"two"
    assert os.readlink(volume / "..data") != first and not (volume / first).exists()
    assert not (volume / "dir").exists()


def test_pod_ips_are_claimed_once_across_runners(tmp_path):
    (tmp_path / "127.64.0.9").write_text('{"pid": 4194303, "pod": "of a killed runner"}')
    claims = podrunner.IpClaims(tmp_path)
    assert not (tmp_path / "127.64.0.9").exists()
    # A claim naming a live process that started at another time: its pid was reused, taken over.
    (tmp_path / "127.64.0.10").write_text(
        json.dumps({"pid": os.getpid(), "started": 1, "pod": "old"})
    )
    assert claims.claim("127.64.0.10", "pod-c")
    # Another runner, alive, holds .254.
    runner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        holder = {
            "pid": runner.pid,
            "started": podrunner.process_start(runner.pid),
            "pod": "elsewhere",
        }
        (tmp_path / "127.64.0.254").write_text(json.dumps(holder))
        assert not claims.claim("127.64.0.254", "pod-a")
    finally:
        runner.kill()
        runner.wait()
    assert claims.claim("127.64.0.254", "pod-a")  # its runner is gone: taken over
    assert json.loads((tmp_path / "127.64.0.254").read_text()) == {
        "pid": os.getpid(),
        "started": podrunner.process_start(os.getpid()),
        "pod": "pod-a",
    }
    assert claims.claim("127.64.0.253", "pod-b")
    claims.release("127.64.0.254")
    assert not (tmp_path / "127.64.0.254").exists()
    podrunner.IpClaims(tmp_path).release("127.64.0.253")  # not its claim: nothing happens
    assert (tmp_path / "127.64.0.253").exists()
    claims.release_all()
    assert not list(tmp_path.iterdir())


def test_the_runner_stays_off_when_switched_off_or_without_a_notebook_env(tmp_path, monkeypatch):
    monkeypatch.setenv("AIINFN_POD_RUNNER", "off")
    assert podrunner.for_cluster(tmp_path / "clusters" / "c", tmp_path / "k") == (
        None,
        "AIINFN_POD_RUNNER=off",
    )
    monkeypatch.delenv("AIINFN_POD_RUNNER")
    monkeypatch.setenv("AIINFN_NOTEBOOK_ENV", str(tmp_path / "missing"))
    settings, problem = podrunner.for_cluster(tmp_path / "clusters" / "c", tmp_path / "k")
    assert settings is None and problem.startswith(
        f"no notebook environment at {tmp_path / 'missing'}"
    )


def test_the_hub_image_is_played_by_the_hub_environment_as_z2jh_runs_it(tmp_path):
    nbenv, hubenv = tmp_path / "nbenv", tmp_path / "elsewhere" / "hubenv"
    for env, home in ((nbenv, "/opt/python/bin"), (hubenv, "/srv/python3.12/bin")):
        env.mkdir(parents=True)
        (env / "pyvenv.cfg").write_text(f"home = {home}\n")
    source = tmp_path / "src"
    (source / "helm-values").mkdir(parents=True)
    (source / "helm-values" / "values.yaml").write_text(
        yaml.safe_dump({"hub": {"image": {"name": "registry.example/hub", "tag": "1.2"}}})
    )
    settings = podrunner.settings_for(
        Path("/k"),
        Path("/state"),
        nbenv,
        catalog.default_path(),
        source,
        Path("/claims"),
        hubenv,
        "127.0.0.1:16443",
    )
    hub = settings.images["registry.example/hub:1.2"]
    assert hub == LocalImage(
        prefix=str(hubenv),
        cmd=("jupyterhub", "--config", "/usr/local/etc/jupyterhub/jupyterhub_config.py"),
        user="jovyan",
        uid=1000,
        gid=1000,
        group="jovyan",
        home="/home/jovyan",
        base="python",
        workdir="/srv/jupyterhub",
        files=(("/usr/local/etc/jupyterhub/jupyterhub_config.d", f"{source}/jupyterhub_config.d"),),
    )
    assert {str(hubenv), "/srv/python3.12"} <= set(settings.host_paths)
    assert settings.api_server == "127.0.0.1:16443"
    assert podrunner.Settings.from_json(settings.to_json()) == settings


def test_the_hub_image_is_the_one_the_shipped_values_name():
    values = yaml.safe_load((podrunner.SOURCE_ROOT / podrunner.HUB_VALUES).read_text())
    name = podrunner.hub_image_name(podrunner.SOURCE_ROOT / podrunner.HUB_VALUES)
    assert name == f"{values['hub']['image']['name']}:{values['hub']['image']['tag']}"


def test_hub_env_needs_jupyterhub(tmp_path):
    assert "no hub environment" in podrunner.hub_env_problem(tmp_path)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "jupyterhub").touch()
    assert podrunner.hub_env_problem(tmp_path) is None


def test_the_api_server_address_comes_from_the_runners_kubeconfig(tmp_path):
    path = tmp_path / "kwok.kubeconfig"
    cluster = {"name": "c", "cluster": {"server": "https://127.0.0.1:16651"}}
    path.write_text(yaml.safe_dump({"clusters": [cluster]}))
    assert podrunner.api_server_address(path) == "127.0.0.1:16651"


def test_what_an_image_adds_is_bound_where_the_host_has_folders(tmp_path):
    usr = tmp_path / "usr"
    (usr / "local" / "etc").mkdir(parents=True)
    (usr / "bin").mkdir()
    (usr / "local" / "etc" / "npmrc").write_text("x")
    (usr / "local" / "etc" / "secret").write_text("x")
    (usr / "local" / "etc" / "secret").chmod(0o600)
    (usr / "local" / "man").symlink_to("share/man")
    config = tmp_path / "repo" / "jupyterhub_config.d"
    config.mkdir(parents=True)
    target = f"{usr}/local/etc/jupyterhub/jupyterhub_config.d"
    image = LocalImage(prefix="/env", files=((target, str(config)),))
    shown, mounts = image_root(["/etc", str(usr)], image)
    assert shown == sorted(["/etc", f"{usr}/bin", f"{usr}/local/man"])
    assert mounts == [
        Mount(f"{usr}/local/etc/npmrc", f"{usr}/local/etc/npmrc", True, True),
        Mount(str(config), target, True, False),
    ]
    assert image_root(["/usr"], LocalImage(prefix="/env")) == (["/usr"], [])
