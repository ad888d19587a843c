"""The manifest builders, tested as literal manifests (like KubeSpawner's test_objects.py)."""

import copy

import pytest

from aiinfn_hub import catalog, policy, volumes
from aiinfn_hub.identity import Identity
from aiinfn_hub.services.base import HubUser
from aiinfn_hub.services.jobs import manifests
from aiinfn_hub.services.jobs.manifests import BuildSettings, JobMeta, PodParts
from aiinfn_hub.services.jobs.plan import JobRules, SitePolicy, resolve
from aiinfn_hub.services.jobs.request import CloneRequest, JobRequest
from aiinfn_hub.storage_config import StorageSettings

CATALOG = catalog.load(catalog.default_path())
RULES = JobRules(
    priorities={"low": "aiinfn-low", "normal": "aiinfn-normal"},
    default_priority="normal",
    default_ttl_seconds=3600,
    sandbox_path="/aiinfn/sandbox",
    storage_kinds=("home", "projects", "scratch"),
    remote_volume_kinds=volumes.REMOTE_MOUNTABLE,
    offload_accelerator_kinds=frozenset({"cpu", "gpu"}),
    sites=(
        SitePolicy("t1", "vk-t1", frozenset({"cpu", "gpu"})),
        SitePolicy("vm", "vk-vm", frozenset({"cpu"})),
        SitePolicy("hpc", "vk-hpc", frozenset({"cpu", "gpu"}), max_runtime_seconds=86400),
    ),
)
POLICY = policy.for_user(
    policy.parse_rules(
        {"accelerators": "*", "environments": "*", "max_accelerators": 2}, CATALOG, "default"
    ),
    {},
    ["cms-ml"],
)
ALICE = HubUser("alice", frozenset({"cms-ml"}), False)
SETTINGS = BuildSettings(
    accelerator_node_labels=("nvidia.com/gpu.present", "xilinx.com/fpga.board")
)
META = JobMeta("job-0123456789abcdef0123", "key-1", "d" * 64, '{"name":"train"}')
IDENTITY = Identity(100001, {"cms-ml": 200001})
OWNER_LABELS = {
    "app.kubernetes.io/managed-by": "aiinfn-hub",
    "app.kubernetes.io/part-of": "aiinfn-hub",
    "app.kubernetes.io/component": "batch-job",
    "aiinfn.infn.it/owner": "alice",
}
POD_SECURITY = {
    "runAsUser": 100001,
    "runAsGroup": 100001,
    "fsGroup": 100001,
    "fsGroupChangePolicy": "OnRootMismatch",
    "supplementalGroups": [200001],
    "supplementalGroupsPolicy": "Strict",
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
LOCAL_ONLY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {
                    "matchExpressions": [
                        {"key": "type", "operator": "NotIn", "values": ["virtual-kubelet"]}
                    ]
                }
            ]
        }
    }
}
# The user's own access token, the notebook's Secret at the notebook's path: only its one key,
# read-only, optional (the hub keeps it while the user has a server), never with subPath.
TOKEN_VOLUME = {
    "name": "access-token",
    "secret": {
        "secretName": "aiinfn-token-alice",
        "defaultMode": 0o440,
        "optional": True,
        "items": [{"key": "access_token", "path": "access_token"}],
    },
}
TOKEN_MOUNT = {"name": "access-token", "mountPath": "/var/run/secrets/aiinfn", "readOnly": True}
TOKEN_ENV = {"name": "AIINFN_ACCESS_TOKEN_FILE", "value": "/var/run/secrets/aiinfn/access_token"}
IGNORE_DISRUPTIONS = {
    "rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]
}


def batch_plan(**fields):
    request = JobRequest(**{"name": "train", "command": ["python", "train.py"], **fields})
    return resolve(request, ALICE, CATALOG, POLICY, RULES)


ALICE_STORAGE = volumes.StorageUser("alice", IDENTITY, ("cms-ml",))
INIT_RESOURCES = {
    "requests": {"cpu": "10m", "memory": "16Mi"},
    "limits": {"cpu": "500m", "memory": "64Mi"},
}
INIT_SECURITY = {"runAsUser": 100001, "runAsGroup": 100001, **CONTAINER_SECURITY}


def init_container(image, args, mounts):
    """The storage-init container as volumes.init_container writes it."""
    return {
        "name": "storage-init",
        "image": image,
        "command": ["sh", "-c", volumes.INIT_SCRIPT, "storage-init", *args],
        "securityContext": INIT_SECURITY,
        "resources": INIT_RESOURCES,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": m, "mountPath": f"/aiinfn-init/{m}"} for m in mounts],
    }


def batch_parts(plan):
    job_volumes, mounts = volumes.for_job(StorageSettings(), "alice", ["cms-ml"], plan.volume_kinds)
    init = volumes.init_containers(StorageSettings(), ALICE_STORAGE, plan.volume_kinds, plan.image)
    return PodParts(
        image=plan.image,
        volumes=tuple(job_volumes),
        mounts=tuple(mounts),
        security=volumes.pod_security_context(IDENTITY),
        init_containers=tuple(init),
    )


def test_a_gpu_batch_job_with_sandbox_files():
    plan = batch_plan(
        accelerator="t4",
        files={"train.py": "print(1)"},
        env={"EPOCHS": "3"},
        completions=4,
        parallelism=2,
        deadline_seconds=7200,
    )
    assert manifests.make_job(META, plan, batch_parts(plan), SETTINGS) == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "job-0123456789abcdef0123",
            "labels": {
                **OWNER_LABELS,
                "aiinfn.infn.it/job-kind": "batch",
                "aiinfn.infn.it/project": "cms-ml",
                "kueue.x-k8s.io/queue-name": "project-cms-2dml",
                "kueue.x-k8s.io/priority-class": "aiinfn-normal",
            },
            "annotations": {
                "aiinfn.infn.it/owner-name": "alice",
                "aiinfn.infn.it/project": "cms-ml",
                "aiinfn.infn.it/display-name": "train",
                "aiinfn.infn.it/idempotency-key": "key-1",
                "aiinfn.infn.it/request-digest": "d" * 64,
                "aiinfn.infn.it/request": '{"name":"train"}',
            },
        },
        "spec": {
            "suspend": True,
            "completions": 4,
            "parallelism": 2,
            "completionMode": "Indexed",
            "backoffLimit": 3,
            "podFailurePolicy": IGNORE_DISRUPTIONS,
            "ttlSecondsAfterFinished": 3600,
            "activeDeadlineSeconds": 7200,
            "template": {
                "metadata": {
                    "labels": {
                        **OWNER_LABELS,
                        "aiinfn.infn.it/job-kind": "batch",
                        "aiinfn.infn.it/accelerator": "t4",
                        "aiinfn.infn.it/project": "cms-ml",
                    },
                    "annotations": {
                        "aiinfn.infn.it/owner-name": "alice",
                        "aiinfn.infn.it/display-name": "train",
                    },
                },
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "priorityClassName": "aiinfn-batch",
                    # SIGTERM, then 20 s to checkpoint, when a notebook takes the node.
                    "terminationGracePeriodSeconds": 20,
                    "securityContext": POD_SECURITY,
                    "affinity": LOCAL_ONLY,
                    "nodeSelector": {"nvidia.com/gpu.product": "Tesla-T4"},
                    # Whichever pod comes first makes the user's folders, as the user, never root.
                    "initContainers": [
                        init_container(
                            "harbor.cloud.infn.it/ai-infn/ml-gpu:2025.10",
                            [
                                "aiinfn-home",
                                "/aiinfn-init/home",
                                "alice",
                                "-",
                                "aiinfn-project-cms-2dml",
                                "/aiinfn-init/project-cms-2dml",
                                "cms-2dml",
                                "200001",
                            ],
                            ["home", "project-cms-2dml"],
                        )
                    ],
                    "containers": [
                        {
                            "name": "job",
                            "image": "harbor.cloud.infn.it/ai-infn/ml-gpu:2025.10",
                            "command": ["python", "train.py"],
                            "env": [
                                {"name": "AIINFN_JOB_NAME", "value": "job-0123456789abcdef0123"},
                                {"name": "AIINFN_PROJECT", "value": "cms-ml"},
                                # The notebook's token file: the hub keeps it fresh.
                                {
                                    "name": "AIINFN_ACCESS_TOKEN_FILE",
                                    "value": "/var/run/secrets/aiinfn/access_token",
                                },
                                {"name": "EPOCHS", "value": "3"},
                            ],
                            "resources": {
                                "requests": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"},
                                "limits": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"},
                            },
                            "securityContext": CONTAINER_SECURITY,
                            "volumeMounts": [
                                {"name": "home", "mountPath": "/home/jovyan", "subPath": "alice"},
                                {
                                    "name": "project-cms-2dml",
                                    "mountPath": "/home/shared/cms-ml",
                                    "subPath": "cms-2dml",
                                },
                                {
                                    "name": "aiinfn-sandbox",
                                    "mountPath": "/aiinfn/sandbox",
                                    "readOnly": True,
                                },
                                TOKEN_MOUNT,
                            ],
                            "workingDir": "/aiinfn/sandbox",
                        }
                    ],
                    "volumes": [
                        {"name": "home", "persistentVolumeClaim": {"claimName": "aiinfn-home"}},
                        {
                            "name": "project-cms-2dml",
                            "persistentVolumeClaim": {"claimName": "aiinfn-project-cms-2dml"},
                        },
                        {
                            "name": "aiinfn-sandbox",
                            "configMap": {"name": "job-0123456789abcdef0123", "defaultMode": 0o555},
                        },
                        TOKEN_VOLUME,
                    ],
                },
            },
        },
    }


@pytest.mark.parametrize(
    "kinds, folders",
    [
        (
            ["projects"],
            [["aiinfn-project-cms-2dml", "/aiinfn-init/project-cms-2dml", "cms-2dml", "200001"]],
        ),
        (["home", "scratch"], [["aiinfn-home", "/aiinfn-init/home", "alice", "-"]]),
        (["scratch"], []),
    ],
)
def test_a_job_makes_exactly_the_folders_it_mounts(kinds, folders):
    plan = batch_plan(volumes=kinds)
    spec = manifests.make_job(META, plan, batch_parts(plan), SETTINGS)["spec"]["template"]["spec"]
    assert [arg for c in spec.get("initContainers", ()) for arg in c["command"][4:]] == [
        arg for folder in folders for arg in folder
    ]
    assert [m["mountPath"] for c in spec.get("initContainers", ()) for m in c["volumeMounts"]] == [
        folder[1] for folder in folders
    ]


def test_a_job_without_init_directories_has_no_init_container():
    plan = batch_plan()
    settings = StorageSettings(init_directories=False)
    assert volumes.init_containers(settings, ALICE_STORAGE, plan.volume_kinds, plan.image) == []


def test_the_preemption_grace_is_the_pods_termination_grace():
    # AiInfnJobs.preemption_grace_seconds: how long a job has to checkpoint after SIGTERM.
    plan = batch_plan()
    settings = BuildSettings(grace_seconds=5)
    spec = manifests.make_job(META, plan, batch_parts(plan), settings)["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] == 5


def test_a_jobs_retries_are_its_backoff_limit():
    plan = batch_plan(retries=0)
    job = manifests.make_job(META, plan, batch_parts(plan), BuildSettings())
    assert job["spec"]["backoffLimit"] == 0


def test_the_sandbox_configmap_and_its_adoption():
    plan = batch_plan(files={"train.py": "print(1)", "a.cfg": "x=1"})
    assert manifests.make_sandbox(META, plan) == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "job-0123456789abcdef0123",
            "labels": {**OWNER_LABELS, "app.kubernetes.io/component": "batch-job-sandbox"},
            "annotations": {
                "aiinfn.infn.it/owner-name": "alice",
                "aiinfn.infn.it/idempotency-key": "key-1",
                "aiinfn.infn.it/request-digest": "d" * 64,
            },
        },
        "data": {"a.cfg": "x=1", "train.py": "print(1)"},
    }
    assert manifests.sandbox_owner("job-x", "uid-1") == {
        "metadata": {
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": "job-x",
                    "uid": "uid-1",
                    "controller": False,
                    "blockOwnerDeletion": False,
                }
            ]
        }
    }


def test_cpu_jobs_stay_off_accelerator_nodes_and_request_resources():
    plan = batch_plan(volumes=[])
    spec = manifests.make_job(META, plan, batch_parts(plan), SETTINGS)["spec"]["template"]["spec"]
    assert spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == {
        "nodeSelectorTerms": [
            {
                "matchExpressions": [
                    {"key": "type", "operator": "NotIn", "values": ["virtual-kubelet"]},
                    {"key": "nvidia.com/gpu.present", "operator": "DoesNotExist"},
                    {"key": "xilinx.com/fpga.board", "operator": "DoesNotExist"},
                ]
            }
        ]
    }
    assert "nodeSelector" not in spec and spec["volumes"] == [TOKEN_VOLUME]
    assert spec["containers"][0]["resources"] == {
        "requests": {"cpu": "2", "memory": "8Gi"},
        "limits": {"cpu": "2", "memory": "8Gi"},
    }


VIRTUAL_TOLERATION = {
    "key": "virtual-node.interlink/no-schedule",
    "operator": "Equal",
    "value": "true",
    "effect": "NoSchedule",
}


def remote_term(*sites):
    """The virtual nodes of the accepting sites, and none of the local flavors' label keys
    (Kueue matches a term only on the keys a flavor has: without these the term would match
    every local flavor)."""
    return {
        "matchExpressions": [
            {"key": "virtual-node.interlink/type", "operator": "In", "values": ["virtual-kubelet"]},
            {"key": "virtual-node.interlink/site", "operator": "In", "values": list(sites)},
            {"key": "nvidia.com/gpu.present", "operator": "DoesNotExist"},
            {"key": "xilinx.com/fpga.board", "operator": "DoesNotExist"},
            {"key": "node-role.kubernetes.io/services", "operator": "DoesNotExist"},
        ]
    }


# A GPU job without a deadline: only the site without a maximum run time that runs GPUs.
REMOTE_TERM = remote_term("t1")
OFFLOAD_SETTINGS = BuildSettings(
    accelerator_node_labels=("nvidia.com/gpu.present", "xilinx.com/fpga.board"),
    local_flavor_label_keys=(
        "nvidia.com/gpu.present",
        "xilinx.com/fpga.board",
        "node-role.kubernetes.io/services",
    ),
)


def _pod_spec(plan):
    job = manifests.make_job(META, plan, batch_parts(plan), OFFLOAD_SETTINGS)
    return job["spec"]["template"]["spec"]


def test_only_remote_jobs_go_to_the_virtual_node_without_model_labels():
    plan = batch_plan(accelerator="a100", offload="only")
    spec = _pod_spec(plan)
    assert spec["affinity"] == {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [REMOTE_TERM]}
        }
    }
    assert spec["tolerations"] == [VIRTUAL_TOLERATION]
    assert "nodeSelector" not in spec and spec["volumes"] == [TOKEN_VOLUME]
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


@pytest.mark.parametrize("fields", [{"offload": "may"}, {"offloadable": True}])
def test_may_jobs_fit_the_local_accelerator_or_the_virtual_node_and_kueue_picks(fields):
    """No node selector: the flavor Kueue admits the job to adds its labels (local ones first)."""
    spec = _pod_spec(batch_plan(accelerator="t4", **fields))
    local = {
        "matchExpressions": [
            {"key": "type", "operator": "NotIn", "values": ["virtual-kubelet"]},
            {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["Tesla-T4"]},
        ]
    }
    assert spec["affinity"] == {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [local, REMOTE_TERM]
            }
        }
    }
    assert spec["tolerations"] == [VIRTUAL_TOLERATION]
    assert "nodeSelector" not in spec


def test_may_cpu_jobs_avoid_local_accelerator_nodes():
    spec = _pod_spec(batch_plan(offload="may"))
    local = {
        "matchExpressions": [
            {"key": "type", "operator": "NotIn", "values": ["virtual-kubelet"]},
            {"key": "nvidia.com/gpu.present", "operator": "DoesNotExist"},
            {"key": "xilinx.com/fpga.board", "operator": "DoesNotExist"},
        ]
    }
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms == {"nodeSelectorTerms": [local, remote_term("t1", "vm")]}


def test_only_jobs_name_exactly_the_sites_that_accept_them_and_the_job_records_them():
    plan = batch_plan(accelerator="a100", offload="only", deadline_seconds=3600)
    job = manifests.make_job(META, plan, batch_parts(plan), OFFLOAD_SETTINGS)
    terms = job["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert terms == {"nodeSelectorTerms": [remote_term("t1", "hpc")]}
    assert job["metadata"]["annotations"]["aiinfn.infn.it/sites"] == "t1,hpc"


def test_a_may_job_that_no_site_accepts_stays_local_and_says_so():
    rules = JobRules(**{**RULES.__dict__, "sites": RULES.sites[1:]})
    request = JobRequest(name="x", command=["true"], accelerator="a100", offload="may")
    plan = resolve(request, ALICE, CATALOG, POLICY, rules)
    assert (plan.offload, plan.sites) == ("may", ())
    job = manifests.make_job(META, plan, batch_parts(plan), OFFLOAD_SETTINGS)
    spec = job["spec"]["template"]["spec"]
    assert spec["affinity"] == {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "type", "operator": "NotIn", "values": ["virtual-kubelet"]}
                        ]
                    }
                ]
            }
        }
    }
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-80GB-PCIe"}
    assert "tolerations" not in spec
    assert job["metadata"]["annotations"]["aiinfn.infn.it/sites"] == ""


def test_never_jobs_record_no_sites():
    plan = batch_plan(offload="never", volumes=["home"])
    job = manifests.make_job(META, plan, batch_parts(plan), OFFLOAD_SETTINGS)
    assert "aiinfn.infn.it/sites" not in job["metadata"]["annotations"]


def test_never_offloaded_jobs_keep_off_the_virtual_node():
    spec = _pod_spec(batch_plan(accelerator="t4", offload="never", volumes=["home"]))
    assert spec["affinity"] == LOCAL_ONLY
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "Tesla-T4"}
    assert "tolerations" not in spec


NOTEBOOK_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "jupyter-alice",
        "labels": {
            "app": "jupyterhub",
            "component": "singleuser-server",
            "hub.jupyter.org/username": "alice",
            "hub.jupyter.org/servername": "",
            "aiinfn.infn.it/accelerator": "t4",
            "app.kubernetes.io/managed-by": "kubespawner",
        },
        "annotations": {
            "hub.jupyter.org/username": "alice",
            "hub.jupyter.org/kubespawner-version": "7.1.0",
        },
    },
    "spec": {
        "automountServiceAccountToken": False,
        "serviceAccountName": "default",
        "nodeName": "server1-t4",
        "priorityClassName": "aiinfn-notebook",
        "securityContext": {**POD_SECURITY},
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}},
        "tolerations": [
            {"key": "reserved", "operator": "Equal", "value": "cms-ml", "effect": "NoSchedule"}
        ],
        "imagePullSecrets": [{"name": "harbor-pull"}],
        "initContainers": [
            init_container(
                "busybox:1",
                [
                    "aiinfn-home",
                    "/aiinfn-init/home",
                    "alice",
                    "-",
                    "aiinfn-project-cms-2dml",
                    "/aiinfn-init/project-cms-2dml",
                    "cms-2dml",
                    "200001",
                ],
                ["home", "project-cms-2dml"],
            )
        ],
        "containers": [
            {
                "name": "notebook",
                "image": "harbor.cloud.infn.it/ai-infn/ml-gpu:2025.10",
                "imagePullPolicy": "IfNotPresent",
                "args": ["jupyterhub-singleuser"],
                "workingDir": "/home/jovyan",
                "ports": [{"containerPort": 8888, "name": "notebook-port"}],
                "lifecycle": {"postStart": {"exec": {"command": ["true"]}}},
                "env": [
                    {"name": "JUPYTERHUB_API_TOKEN", "value": "hub-token"},
                    {"name": "JPY_API_TOKEN", "value": "hub-token"},
                    {"name": "JUPYTERHUB_OAUTH_SCOPES", "value": "[]"},
                    {"name": "JUPYTERHUB_USER", "value": "alice"},
                    {
                        "name": "AIINFN_ACCESS_TOKEN_FILE",
                        "value": "/var/run/secrets/aiinfn/access_token",
                    },
                    {"name": "MY_PASSWORD", "value": "hunter2"},
                    {"name": "S3_CREDS", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "k"}}},
                    {"name": "MEM_LIMIT", "value": "17179869184"},
                    {"name": "CONDA_DIR", "value": "/opt/conda"},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                ],
                "envFrom": [
                    {"secretRef": {"name": "juicefs"}},
                    {"configMapRef": {"name": "site-env"}},
                ],
                "resources": {
                    "requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
                    "limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
                },
                "securityContext": {"privileged": False, "runAsUser": 100001},
                "volumeMounts": [
                    {"name": "home", "mountPath": "/home/jovyan", "subPath": "alice"},
                    {"name": "shared", "mountPath": "/home/public"},
                    {
                        "name": "project-cms-2dml",
                        "mountPath": "/home/shared/cms-ml",
                        "subPath": "cms-2dml",
                    },
                    {"name": "envs", "mountPath": "/envs", "readOnly": True},
                    {"name": "scratch", "mountPath": "/scratch"},
                    {"name": "shm", "mountPath": "/dev/shm"},
                    {"name": "bucket", "mountPath": "/bucket"},
                    {
                        "name": "access-token",
                        "mountPath": "/var/run/secrets/aiinfn",
                        "readOnly": True,
                    },
                ],
            },
            {"name": "sidecar", "image": "proxy:1"},
        ],
        "volumes": [
            {"name": "home", "persistentVolumeClaim": {"claimName": "aiinfn-home"}},
            {"name": "shared", "persistentVolumeClaim": {"claimName": "aiinfn-shared"}},
            {
                "name": "project-cms-2dml",
                "persistentVolumeClaim": {"claimName": "aiinfn-project-cms-2dml"},
            },
            {
                "name": "envs",
                "persistentVolumeClaim": {"claimName": "aiinfn-envs", "readOnly": True},
            },
            {"name": "scratch", "emptyDir": {"sizeLimit": "20Gi"}},
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
            {
                "name": "bucket",
                "csi": {"driver": "s3.csi", "nodePublishSecretRef": {"name": "aiinfn-token-alice"}},
            },
            {"name": "access-token", "secret": {"secretName": "aiinfn-token-alice"}},
        ],
    },
    "status": {"phase": "Running"},
}


def clone_plan(**fields):
    request = CloneRequest(
        **{"name": "sweep", "command": ["python", "train.py", "--lr", "0.1"], **fields}
    )
    facts = manifests.notebook_facts(NOTEBOOK_POD, CATALOG.accelerators)
    return resolve(request, ALICE, CATALOG, POLICY, RULES, facts)


def test_notebook_facts_are_the_clone_defaults():
    facts = manifests.notebook_facts(NOTEBOOK_POD, CATALOG.accelerators)
    assert (facts.accelerator, facts.count, facts.cpu, facts.memory) == ("t4", 1, "4", "16Gi")
    assert facts.volume_kinds == ("home", "projects", "scratch")


def test_a_bunshin_clone_keeps_image_volumes_and_env_but_no_token_or_hub_wiring():
    plan = clone_plan(working_dir="/home/jovyan/project")
    job = manifests.make_bunshin_job(META, plan, copy.deepcopy(NOTEBOOK_POD), SETTINGS)
    assert job["metadata"]["labels"]["aiinfn.infn.it/job-kind"] == "bunshin"
    template = job["spec"]["template"]
    assert template["metadata"] == {
        "labels": {
            **OWNER_LABELS,
            "aiinfn.infn.it/job-kind": "bunshin",
            "aiinfn.infn.it/accelerator": "t4",
            "aiinfn.infn.it/project": "cms-ml",
        },
        "annotations": {
            "aiinfn.infn.it/owner-name": "alice",
            "aiinfn.infn.it/display-name": "sweep",
        },
    }
    assert template["spec"] == {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "priorityClassName": "aiinfn-batch",
        "terminationGracePeriodSeconds": 20,
        "securityContext": POD_SECURITY,
        "affinity": LOCAL_ONLY,
        "nodeSelector": {"nvidia.com/gpu.product": "Tesla-T4"},
        "imagePullSecrets": [{"name": "harbor-pull"}],
        "initContainers": NOTEBOOK_POD["spec"]["initContainers"],
        "containers": [
            {
                "name": "job",
                "image": "harbor.cloud.infn.it/ai-infn/ml-gpu:2025.10",
                "imagePullPolicy": "IfNotPresent",
                "command": ["python", "train.py", "--lr", "0.1"],
                "env": [
                    {"name": "CONDA_DIR", "value": "/opt/conda"},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "AIINFN_JOB_NAME", "value": "job-0123456789abcdef0123"},
                    {"name": "AIINFN_PROJECT", "value": "cms-ml"},
                    TOKEN_ENV,
                ],
                "envFrom": [{"configMapRef": {"name": "site-env"}}],
                "resources": {
                    "requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
                    "limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
                },
                "securityContext": CONTAINER_SECURITY,
                "volumeMounts": [
                    {"name": "home", "mountPath": "/home/jovyan", "subPath": "alice"},
                    {"name": "shared", "mountPath": "/home/public"},
                    {
                        "name": "project-cms-2dml",
                        "mountPath": "/home/shared/cms-ml",
                        "subPath": "cms-2dml",
                    },
                    {"name": "envs", "mountPath": "/envs", "readOnly": True},
                    {"name": "scratch", "mountPath": "/scratch"},
                    {"name": "shm", "mountPath": "/dev/shm"},
                    # Not the notebook's token volume: the service's own mount of that Secret.
                    TOKEN_MOUNT,
                ],
                "workingDir": "/home/jovyan/project",
            }
        ],
        "volumes": [
            {"name": "home", "persistentVolumeClaim": {"claimName": "aiinfn-home"}},
            {"name": "shared", "persistentVolumeClaim": {"claimName": "aiinfn-shared"}},
            {
                "name": "project-cms-2dml",
                "persistentVolumeClaim": {"claimName": "aiinfn-project-cms-2dml"},
            },
            {
                "name": "envs",
                "persistentVolumeClaim": {"claimName": "aiinfn-envs", "readOnly": True},
            },
            {"name": "scratch", "emptyDir": {"sizeLimit": "20Gi"}},
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
            TOKEN_VOLUME,
        ],
    }
    assert "hub-token" not in repr(job) and "hunter2" not in repr(job)


def test_a_clone_mounts_only_the_volume_kinds_asked_for():
    job = manifests.make_bunshin_job(META, clone_plan(volumes=["home"]), NOTEBOOK_POD, SETTINGS)
    names = [v["name"] for v in job["spec"]["template"]["spec"]["volumes"]]
    assert names == ["home", "envs", "shm", "access-token"]
    # The notebook's folder set-up, for the home folder only.
    assert job["spec"]["template"]["spec"]["initContainers"] == [
        init_container("busybox:1", ["aiinfn-home", "/aiinfn-init/home", "alice", "-"], ["home"])
    ]
    job = manifests.make_bunshin_job(META, clone_plan(volumes=["scratch"]), NOTEBOOK_POD, SETTINGS)
    assert "initContainers" not in job["spec"]["template"]["spec"]


def test_a_clone_of_a_notebook_made_by_another_script_version_gets_no_init_container():
    pod = copy.deepcopy(NOTEBOOK_POD)
    pod["spec"]["initContainers"][0]["command"] = ["sh", "-c", 'mkdir -p "$1"', "storage-init", "x"]
    job = manifests.make_bunshin_job(META, clone_plan(), pod, SETTINGS)
    assert "initContainers" not in job["spec"]["template"]["spec"]


def test_an_offloadable_clone_keeps_only_what_a_remote_site_can_mount():
    pod = copy.deepcopy(NOTEBOOK_POD)
    pod["spec"]["volumes"].append(
        {"name": "juicefs", "persistentVolumeClaim": {"claimName": "aiinfn-juicefs"}}
    )
    pod["spec"]["containers"][0]["volumeMounts"].append(
        {"name": "juicefs", "mountPath": "/juicefs", "subPath": "alice"}
    )
    facts = manifests.notebook_facts(pod, CATALOG.accelerators)
    request = CloneRequest(name="remote", command=["python", "train.py"], offloadable=True)
    plan = resolve(request, ALICE, CATALOG, POLICY, RULES, facts)
    spec = manifests.make_bunshin_job(META, plan, pod, SETTINGS)["spec"]["template"]["spec"]
    assert [v["name"] for v in spec["volumes"]] == ["shm", "access-token"]
    assert (
        "nodeSelector" not in spec
        and spec["tolerations"][0]["key"] == "virtual-node.interlink/no-schedule"
    )
    # Asked for at a remote site, JuiceFS comes as the credentials for the site's mount.
    request = CloneRequest(name="remote", command=["true"], offload="only", volumes=["juicefs"])
    plan = resolve(request, ALICE, CATALOG, POLICY, JUICEFS_RULES, facts)
    spec = manifests.make_bunshin_job(META, plan, pod, SETTINGS)["spec"]["template"]["spec"]
    assert [v["name"] for v in spec["volumes"]] == [
        "shm",
        "access-token",
        "aiinfn-secret-0",
        "aiinfn-secret-1",
        "juicefs-credentials",
    ]
    assert plan.sites == ("t1",)


@pytest.mark.parametrize(
    "name, kind",
    [
        ("home", "home"),
        ("shared", "projects"),
        ("project-cms-2dml", "projects"),
        ("scratch", "scratch"),
        ("juicefs", "juicefs"),
        ("envs", None),
        ("shm", None),
        ("cvmfs", None),
        ("access-token", None),
    ],
)
def test_volume_kinds_of_notebook_volumes(name, kind):
    assert manifests.volume_kind(name) == kind


# -- data for jobs -----------------------------------------------------------------------------

JUICEFS_RULES = JobRules(
    **{
        **RULES.__dict__,
        "storage_kinds": ("home", "projects", "scratch", "juicefs"),
        "sites": (
            SitePolicy("t1", "vk-t1", frozenset({"cpu", "gpu"}), None, True, True),
            *RULES.sites[1:],
        ),
        "juicefs_credentials_secret": "juicefs-remote",
        "project_secrets": {"cms-ml": ("cms-db", "cms-s3")},
    }
)


def test_project_secrets_and_juicefs_credentials_are_read_only_secret_volumes():
    """An `only` job asking for JuiceFS: no claim (no site can mount one), the credentials for
    the site's own mount, the project's Secrets each in its folder, the user's token."""
    request = JobRequest(
        name="train", command=["true"], offload="only", volumes=["juicefs"], deadline_seconds=600
    )
    plan = resolve(request, ALICE, CATALOG, POLICY, JUICEFS_RULES)
    assert (plan.volume_kinds, plan.sites, plan.secrets) == ((), ("t1",), ("cms-db", "cms-s3"))
    parts = PodParts(image="img", security=volumes.pod_security_context(IDENTITY))
    job = manifests.make_job(META, plan, parts, OFFLOAD_SETTINGS)
    spec = job["spec"]["template"]["spec"]
    assert spec["volumes"] == [
        TOKEN_VOLUME,
        {"name": "aiinfn-secret-0", "secret": {"secretName": "cms-db", "defaultMode": 0o440}},
        {"name": "aiinfn-secret-1", "secret": {"secretName": "cms-s3", "defaultMode": 0o440}},
        {
            "name": "juicefs-credentials",
            "secret": {"secretName": "juicefs-remote", "defaultMode": 0o440},
        },
    ]
    assert spec["containers"][0]["volumeMounts"] == [
        TOKEN_MOUNT,
        {"name": "aiinfn-secret-0", "mountPath": "/aiinfn/secrets/cms-db", "readOnly": True},
        {"name": "aiinfn-secret-1", "mountPath": "/aiinfn/secrets/cms-s3", "readOnly": True},
        {
            "name": "juicefs-credentials",
            "mountPath": "/aiinfn/juicefs-credentials",
            "readOnly": True,
        },
    ]
    assert spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == {
        "nodeSelectorTerms": [remote_term("t1")]
    }
    assert job["metadata"]["annotations"]["aiinfn.infn.it/sites"] == "t1"


def test_a_local_job_mounts_the_juicefs_claim_and_gets_no_credentials():
    request = JobRequest(name="train", command=["true"], volumes=["juicefs"])
    plan = resolve(request, ALICE, CATALOG, POLICY, JUICEFS_RULES)
    job_volumes, mounts = volumes.for_job(
        StorageSettings(juicefs_claim="aiinfn-juicefs"), "alice", ["cms-ml"], plan.volume_kinds
    )
    parts = PodParts(image="img", volumes=tuple(job_volumes), mounts=tuple(mounts))
    spec = manifests.make_job(META, plan, parts, SETTINGS)["spec"]["template"]["spec"]
    assert [v["name"] for v in spec["volumes"]] == [
        "juicefs",
        "access-token",
        "aiinfn-secret-0",
        "aiinfn-secret-1",
    ]
    assert "juicefs-remote" not in repr(spec)
