"""Pod spec -> what the pod runner starts: command, environment, user, volumes and mounts."""

import base64
import json
from decimal import Decimal

import pytest
from aiinfn_dev.devcluster import components, podplan
from aiinfn_dev.devcluster.podplan import (
    ConfigError,
    LocalImage,
    Mount,
    MountError,
    Objects,
    Volume,
)

IMAGE = LocalImage(prefix="/env")
NODE = {"cpu": "8", "memory": "32Gi"}


def pod(**spec):
    return {
        "metadata": {
            "name": "nb",
            "namespace": "ns",
            "uid": "u-1",
            "labels": {"app": "x", "b": "y"},
            "annotations": {"note": 'say "hi"'},
        },
        "spec": {
            "nodeName": "node-1",
            "serviceAccountName": "default",
            "containers": [{"name": "notebook", "image": "img"}],
            **spec,
        },
    }


def env_of(container, objects=None, p=None):
    return podplan.container_env(
        p or pod(containers=[container]),
        container,
        IMAGE,
        Objects() if objects is None else objects,
        "127.64.0.254",
        "127.0.0.1",
        NODE,
    )


def test_runner_image_is_the_first_containers_as_kwok_reads_it():
    assert components.RUNNER_IMAGE_KEY == ".spec.containers.[0].image"
    assert (
        podplan.runner_image(
            pod(containers=[{"name": "a", "image": "one"}, {"name": "b", "image": "two"}])
        )
        == "one"
    )
    assert podplan.runner_image({"spec": {}}) is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("$(A)-$(B)", "1-$(B)"),
        ("$$(A)", "$(A)"),
        ("$$", "$"),
        ("cost $5 $(A", "cost $5 $(A"),
        ("$(A)$(A)", "11"),
        ("", ""),
    ],
)
def test_dollar_paren_expansion_follows_kubernetes(text, expected):
    assert podplan.expand(text, {"A": "1"}) == expected


@pytest.mark.parametrize(
    "container, expected",
    [
        ({"command": ["python"], "args": ["-c", "print($(X))"]}, ["python", "-c", "print(7)"]),
        ({"command": ["python"]}, ["python"]),
        ({"args": ["--debug"]}, ["--debug"]),
        ({}, ["jupyterhub-singleuser"]),
    ],
)
def test_command_and_args_against_the_images_cmd(container, expected):
    assert podplan.container_argv(container, IMAGE, {"X": "7"}) == expected


def test_no_command_at_all_is_a_config_error():
    with pytest.raises(ConfigError, match="no command specified"):
        podplan.container_argv({}, LocalImage(prefix="/env", cmd=()), {})


def test_environment_layers_image_env_from_and_env_in_order():
    container = {
        "name": "notebook",
        "envFrom": [
            {"configMapRef": {"name": "cm"}, "prefix": "CM_"},
            {"secretRef": {"name": "missing", "optional": True}},
        ],
        "env": [
            {"name": "PATH", "value": "/custom:$(PATH)"},
            {"name": "GREETING", "value": "hi $(CM_who)"},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
            {"name": "CPUS", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {
                "name": "MEM_MI",
                "valueFrom": {
                    "resourceFieldRef": {"resource": "requests.memory", "divisor": "1Mi"}
                },
            },
        ],
        "resources": {"requests": {"memory": "1536Mi"}},
    }
    objects = Objects(
        secrets={"s": {"token": b"t0k"}}, config_maps={"cm": {"who": b"you", "bad-name!": b"x"}}
    )
    assert env_of(container, objects) == {
        "PATH": "/custom:/env/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "SHELL": "/bin/bash",
        "LANG": "C.UTF-8",
        "HOME": "/home/jovyan",
        "USER": "jovyan",
        "NB_USER": "jovyan",
        "NB_UID": "1000",
        "NB_GID": "100",
        "HOSTNAME": "nb",
        "CM_who": "you",
        "GREETING": "hi you",
        "POD_IP": "127.64.0.254",
        "NODE": "node-1",
        "APP": "x",
        "TOKEN": "t0k",
        "CPUS": "8",
        "MEM_MI": "1536",
    }


@pytest.mark.parametrize(
    "env, message",
    [
        (
            {"name": "T", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}}},
            'secret "gone" not found',
        ),
        (
            {"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "nope"}}},
            "couldn't find key nope in Secret ns/s",
        ),
        (
            {"name": "T", "valueFrom": {"fieldRef": {"fieldPath": "spec.containers"}}},
            "unsupported fieldRef",
        ),
    ],
)
def test_unresolvable_environment_is_a_config_error(env, message):
    with pytest.raises(ConfigError, match=message):
        env_of({"name": "notebook", "env": [env]}, Objects(secrets={"s": {"k": b"v"}}))


def test_optional_missing_keys_are_left_out():
    container = {
        "name": "notebook",
        "env": [
            {
                "name": "T",
                "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k", "optional": True}},
            }
        ],
    }
    assert "T" not in env_of(container)


@pytest.mark.parametrize(
    "text, value", [("250m", Decimal("0.25")), ("8Gi", 8 * 2**30), ("1e3", 1000), ("2k", 2000)]
)
def test_quantities(text, value):
    assert podplan.quantity(text) == value


def test_wildcard_listen_address_becomes_the_pod_ip():
    env = {"JUPYTERHUB_SERVICE_URL": "http://0.0.0.0:8888/user/alice/", "OTHER": "0.0.0.0"}
    assert podplan.listen_on_pod_ip(env, "127.64.3.254") == {
        "JUPYTERHUB_SERVICE_URL": "http://127.64.3.254:8888/user/alice/",
        "OTHER": "0.0.0.0",
    }
    named = {"JUPYTERHUB_SERVICE_URL": "http://10.0.0.5:8888/"}
    assert podplan.listen_on_pod_ip(named, "127.64.3.254") == named


def test_user_comes_from_container_then_pod_then_image():
    spec_ctx = {
        "runAsUser": 2001,
        "runAsGroup": 2001,
        "fsGroup": 3001,
        "supplementalGroups": [4001, 3001],
    }
    p = pod(securityContext=spec_ctx)
    assert podplan.container_user(p, {"name": "c"}, IMAGE) == (2001, 2001, [3001, 4001])
    assert podplan.container_user(p, {"name": "c", "securityContext": {"runAsUser": 5}}, IMAGE)[
        :2
    ] == (5, 2001)
    assert podplan.container_user(pod(), {"name": "c"}, IMAGE) == (1000, 100, [])


@pytest.mark.parametrize(
    "ctx, message",
    [
        ({"runAsUser": 0, "runAsNonRoot": True}, "runAsNonRoot and image will run as root"),
        ({"runAsUser": 0}, "does not run containers as root"),
    ],
)
def test_root_is_refused(ctx, message):
    with pytest.raises(ConfigError, match=message):
        podplan.container_user(pod(), {"name": "c", "securityContext": ctx}, IMAGE)


def test_references_name_everything_to_fetch():
    p = pod(
        containers=[
            {
                "name": "c",
                "image": "i",
                "envFrom": [{"secretRef": {"name": "s1"}}],
                "env": [
                    {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "c1", "key": "k"}}}
                ],
            }
        ],
        volumes=[
            {"name": "home", "persistentVolumeClaim": {"claimName": "home"}},
            {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {}}},
            {"name": "tok", "secret": {"secretName": "s2"}},
            {
                "name": "p",
                "projected": {
                    "sources": [{"configMap": {"name": "c2"}}, {"secret": {"name": "s3"}}]
                },
            },
        ],
    )
    assert podplan.references(p) == ({"s1", "s2", "s3"}, {"c1", "c2"}, {"home", "nb-scratch"})


def test_claim_path_is_the_bound_volumes_host_folder():
    claim = {"metadata": {"name": "home"}, "status": {"phase": "Bound"}}
    assert podplan.claim_path(claim, {"spec": {"hostPath": {"path": "/srv/home"}}}) == (
        "/srv/home",
        False,
    )
    assert podplan.claim_path(
        claim, {"spec": {"local": {"path": "/nvme"}, "accessModes": ["ReadOnlyMany"]}}
    ) == ("/nvme", True)
    with pytest.raises(MountError, match="not bound"):
        podplan.claim_path({"metadata": {"name": "home"}, "status": {"phase": "Pending"}}, None)
    with pytest.raises(MountError, match="only hostPath and local"):
        podplan.claim_path(claim, {"metadata": {"name": "pv"}, "spec": {"nfs": {"path": "/x"}}})


def test_volumes_on_this_machine():
    p = pod(
        volumes=[
            {"name": "home", "persistentVolumeClaim": {"claimName": "home", "readOnly": True}},
            {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {}}},
            {"name": "shm", "emptyDir": {"medium": "Memory"}},
            {
                "name": "tok",
                "secret": {
                    "secretName": "s",
                    "items": [{"key": "access_token", "path": "access_token"}],
                    "defaultMode": 0o440,
                },
            },
            {
                "name": "info",
                "downwardAPI": {
                    "items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]
                },
            },
            {
                "name": "all",
                "projected": {
                    "defaultMode": 0o400,
                    "sources": [
                        {"configMap": {"name": "c"}},
                        {
                            "downwardAPI": {
                                "items": [
                                    {"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}
                                ]
                            }
                        },
                    ],
                },
            },
        ]
    )
    objects = Objects(
        secrets={"s": {"access_token": b"tok", "other": b"no"}},
        config_maps={"c": {"k": b"v"}},
        claims={"home": ("/srv/home", False), "nb-scratch": "persistentvolumeclaim not found"},
    )
    assert podplan.pod_volumes(p, objects, "/pods/nb", "127.64.0.254", "127.0.0.1", NODE) == {
        "home": Volume("/srv/home", True),
        "scratch": Volume("/pods/nb/volumes/scratch"),
        "shm": Volume("/pods/nb/volumes/shm"),
        "tok": Volume("/pods/nb/volumes/tok", True, {"access_token": (b"tok", 0o440)}),
        "info": Volume("/pods/nb/volumes/info", True, {"labels": (b'app="x"\nb="y"\n', 0o644)}),
        "all": Volume("/pods/nb/volumes/all", True, {"k": (b"v", 0o400), "ns": (b"ns", 0o400)}),
    }


@pytest.mark.parametrize(
    "volume, message",
    [
        (
            {"name": "home", "persistentVolumeClaim": {"claimName": "home"}},
            "volume 'home': not bound",
        ),
        ({"name": "tok", "secret": {"secretName": "gone"}}, 'secret "gone" not found'),
        (
            {"name": "sa", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}},
            "no service account token",
        ),
        (
            {"name": "ctb", "projected": {"sources": [{"clusterTrustBundle": {"path": "t"}}]}},
            "projected clusterTrustBundle is not supported",
        ),
    ],
)
def test_volumes_that_cannot_be_set_up_are_mount_errors(volume, message):
    objects = Objects(claims={"home": "not bound"})
    with pytest.raises(MountError, match=message):
        podplan.pod_volumes(pod(volumes=[volume]), objects, "/pods/nb", "ip", "host", NODE)


def test_service_account_tokens_and_stand_ins_for_sources_this_machine_lacks():
    p = pod(
        volumes=[
            {
                "name": "api",
                "projected": {
                    "sources": [
                        {"serviceAccountToken": {"path": "token", "expirationSeconds": 600}},
                        {"serviceAccountToken": {"path": "vault", "audience": "vault"}},
                    ]
                },
            },
            {"name": "bucket", "csi": {"driver": "rclone.csi.example.org"}},
        ]
    )
    assert podplan.token_audiences(p) == {"": 600, "vault": 3607}
    objects = Objects(tokens={"": "t-api", "vault": "t-vault"})
    assert podplan.pod_volumes(p, objects, "/pods/nb", "ip", "host", NODE) == {
        "api": Volume(
            "/pods/nb/volumes/api", True, {"token": (b"t-api", 0o644), "vault": (b"t-vault", 0o644)}
        ),
        "bucket": Volume(
            "/pods/nb/volumes/bucket",
            stand_in="volume 'bucket': csi volumes do not exist on this "
            "machine; an empty folder stands in",
        ),
    }


def test_mounts_with_sub_paths_and_read_only():
    volumes = {
        "home": Volume("/srv/home"),
        "tok": Volume("/p/tok", True, {"access_token": (b"t", 0o440)}),
        "envs": Volume("/srv/envs", True),
    }
    container = {
        "volumeMounts": [
            {"name": "home", "mountPath": "/home/jovyan", "subPathExpr": "$(USER_DIR)"},
            {
                "name": "tok",
                "mountPath": "/var/run/secrets/aiinfn/access_token",
                "subPath": "access_token",
            },
            {"name": "envs", "mountPath": "/envs/"},
            {"name": "home", "mountPath": "/ro", "readOnly": True},
        ]
    }
    assert podplan.container_mounts(container, volumes, {"USER_DIR": "alice"}) == [
        Mount("/srv/home/alice", "/home/jovyan", False),
        Mount("/p/tok/access_token", "/var/run/secrets/aiinfn/access_token", True, is_file=True),
        Mount("/srv/envs", "/envs", True),
        Mount("/srv/home", "/ro", True),
    ]


@pytest.mark.parametrize("sub", ["../etc", "/abs", "a/../../b"])
def test_sub_paths_stay_inside_their_volume(sub):
    with pytest.raises(ConfigError, match="relative path without"):
        podplan.container_mounts(
            {"volumeMounts": [{"name": "v", "mountPath": "/m", "subPath": sub}]},
            {"v": Volume("/srv")},
            {},
        )


def test_etc_files_give_the_image_user_and_the_pod_hostname():
    host_passwd = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n"
    assert podplan.etc_passwd(host_passwd, IMAGE) == (
        "root:x:0:0:root:/root:/bin/bash\njovyan:x:1000:100::/home/jovyan:/bin/bash\n"
    )
    assert podplan.etc_group("root:x:0:\n", IMAGE) == "root:x:0:\nusers:x:100:\n"
    assert podplan.etc_group("root:x:0:\nusers:x:100:\n", IMAGE) == "root:x:0:\nusers:x:100:\n"
    assert podplan.etc_hosts("127.64.0.254", "nb").endswith("127.64.0.254\tnb\n")
    assert podplan.etc_profile('PATH="/usr/bin"\nexport PATH\n', "/env/bin:/usr/bin") == (
        'PATH="/usr/bin"\nexport PATH\n\n'
        "# The container's PATH (dev cluster pod runner).\n"
        "export PATH=/env/bin:/usr/bin\n"
    )


def test_host_paths_add_the_environment_and_its_python_without_nesting():
    base = podplan.base_python_dirs("home = /opt/py/3.11/bin\nversion = 3.11.7\n")
    assert base == ["/opt/py/3.11"]
    assert podplan.host_paths(["/work/repo", "/work/repo/.venv-notebook", *base]) == [
        "/bin",
        "/etc",
        "/lib",
        "/lib32",
        "/lib64",
        "/libx32",
        "/opt",
        "/sbin",
        "/usr",
        "/work/repo",
    ]


def test_pod_ips_come_from_the_top_of_the_node_range():
    assert podplan.pick_pod_ip("127.64.3.0/24", []) == "127.64.3.254"
    assert podplan.pick_pod_ip("127.64.3.0/24", ["127.64.3.254", "127.64.3.1"]) == "127.64.3.253"
    with pytest.raises(MountError, match="no free pod IP"):
        podplan.pick_pod_ip("127.64.3.0/30", ["127.64.3.1", "127.64.3.2"])


def test_secret_and_config_map_data_decode():
    secret = {"data": {"a": base64.b64encode(b"\x00bin").decode()}}
    assert podplan.decode_data(secret, secret=True) == {"a": b"\x00bin"}
    config_map = {"data": {"a": "text"}, "binaryData": {"b": base64.b64encode(b"raw").decode()}}
    assert podplan.decode_data(config_map, secret=False) == {"a": b"text", "b": b"raw"}


def test_plan_serialises_for_the_sandbox():
    plan = podplan.Plan(
        argv=["true"],
        env={},
        cwd="/",
        uid=1,
        gid=2,
        groups=[3],
        hostname="h",
        no_new_privs=True,
        read_only_root=False,
        host_paths=["/usr"],
        mounts=[Mount("/a", "/b", True)],
        etc={},
        root="/r",
        log="/l",
    )
    assert json.loads(plan.to_json())["mounts"] == [
        {"source": "/a", "target": "/b", "read_only": True, "is_file": False}
    ]


def test_containers_get_the_kubernetes_services_variables_pointing_at_the_api_server():
    services = podplan.kubernetes_service_env("127.0.0.1:16443")
    tcp = "KUBERNETES_PORT_16443_TCP"
    assert services == {
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": "16443",
        "KUBERNETES_SERVICE_PORT_HTTPS": "16443",
        "KUBERNETES_PORT": "tcp://127.0.0.1:16443",
        tcp: "tcp://127.0.0.1:16443",
        f"{tcp}_PROTO": "tcp",
        f"{tcp}_PORT": "16443",
        f"{tcp}_ADDR": "127.0.0.1",
    }
    # As a kubelet's: the container's own env may use them, and wins over them.
    container = {
        "name": "notebook",
        "env": [
            {"name": "API", "value": "https://$(KUBERNETES_SERVICE_HOST)"},
            {"name": "KUBERNETES_SERVICE_PORT", "value": "443"},
        ],
    }
    env = podplan.container_env(
        pod(containers=[container]),
        container,
        IMAGE,
        Objects(),
        "127.64.0.254",
        "127.0.0.1",
        NODE,
        services,
    )
    assert (env["API"], env["KUBERNETES_SERVICE_PORT"], env["KUBERNETES_SERVICE_HOST"]) == (
        "https://127.0.0.1",
        "443",
        "127.0.0.1",
    )
    assert "KUBERNETES_SERVICE_HOST" not in env_of({"name": "notebook"})


def test_a_python_based_image_has_no_docker_stacks_variables_and_its_own_group():
    image = LocalImage(prefix="/hubenv", uid=1000, gid=1000, group="jovyan", base="python")
    assert image.env() == {
        "PATH": "/hubenv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/home/jovyan",
    }
    assert podplan.etc_group("root:x:0:\n", image) == "root:x:0:\njovyan:x:1000:\n"


def test_folders_on_the_way_to_what_an_image_adds():
    targets = ["/usr/local/etc/jupyterhub/conf.d", "/srv/x"]
    assert podplan.folders_on_the_way(["/etc", "/usr"], targets) == [
        "/usr",
        "/usr/local",
        "/usr/local/etc",
        "/usr/local/etc/jupyterhub",
    ]


def test_host_folders_holding_an_image_path_are_shown_entry_by_entry():
    listing = {
        "/usr": {"bin": "dir", "lib": "dir", "local": "dir", "lib64": "link"},
        "/usr/local": {"bin": "dir", "etc": "dir", "man": "link"},
        "/usr/local/etc": {"npmrc": "file"},
    }
    target = "/usr/local/etc/jupyterhub/jupyterhub_config.d"
    shown, files = podplan.split_host_paths(["/etc", "/usr", "/work/repo"], [target], listing)
    assert shown == [
        "/etc",
        "/usr/bin",
        "/usr/lib",
        "/usr/lib64",
        "/usr/local/bin",
        "/usr/local/man",
        "/work/repo",
    ]
    assert files == [Mount("/usr/local/etc/npmrc", "/usr/local/etc/npmrc", True, True)]
    # A path the host has itself is left out (the image's takes its place); nothing else moves.
    listing = {"/usr": {"bin": "dir", "local": "dir"}}
    assert podplan.split_host_paths(["/usr"], ["/usr/local"], listing) == (["/usr/bin"], [])
    assert podplan.split_host_paths(["/usr"], ["/srv/jupyterhub"], {}) == (["/usr"], [])
