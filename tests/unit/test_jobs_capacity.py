"""Could a job ever run: its built pod against the real helm-values/kueue-queues.yaml and
projects.yaml and the dev cluster's nodes (the same objects the service lists from the cluster),
and against literal ClusterQueues for Kueue's borrowing and lending arithmetic."""

from decimal import Decimal

import pytest
from aiinfn_dev import kueue_config
from aiinfn_dev.devcluster import topology

from aiinfn_hub import catalog, policy
from aiinfn_hub.errors import UserError
from aiinfn_hub.services.base import HubUser
from aiinfn_hub.services.jobs import capacity
from aiinfn_hub.services.jobs.app import AiInfnJobs
from aiinfn_hub.services.jobs.manifests import BuildSettings, JobMeta, PodParts, make_job
from aiinfn_hub.services.jobs.plan import JobRules, resolve, site_policies
from aiinfn_hub.services.jobs.request import JobRequest

CATALOG = catalog.load(catalog.default_path())
DOCUMENTS = kueue_config.load()
NODES = topology.node_manifests("ai-infn")
ROOM = capacity.capacity(
    kueue_config.local_queues(DOCUMENTS, "jhub"),
    [d for d in DOCUMENTS if d["kind"] == "ClusterQueue"],
    [d for d in DOCUMENTS if d["kind"] == "ResourceFlavor"],
    NODES,
)
RULES = JobRules(
    priorities={"normal": "aiinfn-normal"},
    default_priority="normal",
    default_ttl_seconds=3600,
    sandbox_path="/aiinfn/sandbox",
    storage_kinds=("home", "projects"),
    remote_volume_kinds=frozenset({"juicefs"}),
    offload_accelerator_kinds=frozenset({"cpu", "gpu"}),
    sites=site_policies(AiInfnJobs.class_traits()["sites"].default(), catalog.ACCELERATOR_KINDS),
)
ANYTHING = policy.parse_rules(
    {
        "accelerators": "*",
        "environments": "*",
        "max_accelerators": 16,
        "max_cpu": "1000000",
        "max_memory": "1000Ti",
    },
    CATALOG,
    "g",
)
ALICE = HubUser("alice", frozenset({"cms-ml"}), False)
SETTINGS = BuildSettings(
    accelerator_node_labels=("nvidia.com/gpu.present", "xilinx.com/fpga.board")
)
META = JobMeta("job-0123456789abcdef0123", "key-1", "d" * 64, '{"name":"train"}')


def check(**fields) -> None:
    """The service's check of alice's job (project cms-ml) with these request fields."""
    request = JobRequest(**{"name": "train", "command": ["python", "train.py"], **fields})
    plan = resolve(request, ALICE, CATALOG, policy.for_user(ANYTHING, {}, ALICE.groups), RULES)
    job = make_job(META, plan, PodParts(image=plan.image or "x"), SETTINGS)
    names = (
        {plan.accelerator.resource: plan.accelerator.display_name}
        if plan.accelerator.resource
        else {}
    )
    capacity.check(
        ROOM, plan.queue, job["spec"]["template"]["spec"], job["spec"]["parallelism"], names
    )


def refusal(**fields) -> str:
    with pytest.raises(UserError) as error:
        check(**fields)
    assert (error.value.status, error.value.reason) == (400, "capacity")
    return error.value.message


def test_quantities():
    assert [
        capacity.quantity(q) for q in ("4", "500m", "16Gi", "8Ti", "1e3", 2, "1.5k", "x", "")
    ] == [4, Decimal("0.5"), 16 * 2**30, 8 * 2**40, 1000, 2, 1500, 0, 0]


def test_what_a_queue_may_use_is_its_share_plus_what_it_may_borrow_from_its_cohort():
    most = capacity.most_usable([d for d in DOCUMENTS if d["kind"] == "ClusterQueue"])[
        "project-cms-2dml"
    ]
    assert most[("cpu", "cpu")] == 32  # 11 of its own and the others' 11 + 10 (no borrowing limit)
    assert most[("cpu", "memory")] == 128 * 2**30
    assert most[("t4", "nvidia.com/gpu")] == 6  # 3 and a borrowing limit of 3 (the others lend 5)
    assert most[("a30", "nvidia.com/gpu")] == 1  # none of its own; qml's only one
    assert most[("interlink-infn-t1", "cpu")] == 6000


def test_lending_limits_and_queues_outside_a_cohort():
    def queue(name, cohort, **quota):
        return {
            "metadata": {"name": name},
            "spec": {
                **({"cohortName": cohort} if cohort else {}),
                "resourceGroups": [
                    {
                        "coveredResources": ["cpu"],
                        "flavors": [{"name": "f", "resources": [{"name": "cpu", **quota}]}],
                    }
                ],
            },
        }

    most = capacity.most_usable(
        [
            queue("a", "c", nominalQuota="10", borrowingLimit="100"),
            queue("b", "c", nominalQuota="20", lendingLimit="5"),
            queue("d", "c", nominalQuota="4", borrowingLimit="0"),
            queue("alone", None, nominalQuota="7"),
        ]
    )
    assert {name: m[("f", "cpu")] for name, m in most.items()} == {
        "a": 19,
        "b": 34,
        "d": 4,
        "alone": 7,
    }


@pytest.mark.parametrize("key", sorted(CATALOG.accelerators))
def test_every_catalog_accelerator_at_its_default_size_and_largest_count_can_run(key):
    accelerator = CATALOG.accelerators[key]
    count = {} if accelerator.kind == "cpu" else {"count": max(accelerator.counts)}
    check(accelerator=key, **count)
    if accelerator.kind in RULES.offload_accelerator_kinds:
        check(accelerator=key, offloadable=True, volumes=[], **count)


def test_a_pod_bigger_than_any_node_that_could_run_it_is_refused_with_the_largest():
    assert refusal(cpu="999999") == (
        "this job can never run: one pod asks for 999999 CPUs and 8Gi memory, "
        "and the nodes that can run it have at most 16 CPUs and 64Gi memory "
        "(not necessarily on one node)"
    )
    check(cpu="16", memory="64Gi")  # a whole service node
    assert refusal(accelerator="a30", cpu="20").endswith(
        "the nodes that can run it have at most 16 CPUs, 128Gi memory and 1 × NVIDIA A30 "
        "(not necessarily on one node)"
    )
    # Without a deadline only the sites without a maximum run time take it (T1 the largest);
    # with one, Leonardo too.
    assert "at most 2000 CPUs and 8Ti memory" in refusal(offloadable=True, volumes=[], cpu="2001")
    check(offloadable=True, volumes=[], cpu="2001", deadline_seconds=3600)
    assert "at most 4000 CPUs and 16Ti memory" in refusal(
        offloadable=True, volumes=[], cpu="4001", deadline_seconds=3600
    )


def test_more_pods_at_once_than_the_quota_holds_is_refused():
    assert refusal(cpu="10", completions=4, parallelism=4) == (
        "this job can never run: its 4 pods at once need 40 CPUs and 32Gi memory, "
        "and its project's queue can hold at most 32 CPUs and 128Gi memory of this kind "
        "at once (borrowing included); ask for less, or fewer pods at once (parallelism)"
    )
    check(cpu="10", completions=4, parallelism=3)
    assert (
        "at once need 24 CPUs, 96Gi memory and 6 × NVIDIA A100 80GB, "
        "and its project's queue can hold at most 96 CPUs, 768Gi memory and 4 × NVIDIA A100 80GB"
        in refusal(accelerator="a100", count=2, completions=3)
    )
    check(accelerator="a100", count=2, completions=2)


def test_a_queue_missing_from_the_cluster_is_a_conflict():
    with pytest.raises(UserError) as error:
        capacity.check(ROOM, "project-gone", {"containers": []}, 1, {})
    assert error.value.status == 409


def test_a_pod_counts_its_containers_together_or_its_largest_init_container():
    def container(cpu, memory, **extra):
        return {"resources": {"requests": {"cpu": cpu, "memory": memory}}, **extra}

    spec = {
        "containers": [container("2", "1Gi"), container("500m", "1Gi")],
        "initContainers": [container("4", "512Mi"), container("1", "1Gi", restartPolicy="Always")],
    }
    assert capacity.pod_requests(spec) == {"cpu": 4, "memory": 3 * 2**30}


def test_kueues_flavor_rule_counts_only_the_flavors_own_label_keys():
    gpu = capacity.Flavor(
        "t4", {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": "Tesla-T4"}, (), ()
    )
    cpu = capacity.Flavor("cpu", {"node-role.kubernetes.io/services": ""}, (), ())
    virtual = capacity.Flavor(
        "vk",
        {"virtual-node.interlink/type": "virtual-kubelet"},
        ({"key": "virtual-node.interlink/no-schedule", "value": "true", "effect": "NoSchedule"},),
        (),
    )
    cpu_only = {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "nvidia.com/gpu.present", "operator": "DoesNotExist"}
                            ]
                        }
                    ]
                }
            }
        }
    }
    assert [capacity.flavor_fits(cpu_only, f) for f in (gpu, cpu, virtual)] == [False, True, False]
    tolerating = {
        "tolerations": [{"key": "virtual-node.interlink/no-schedule", "operator": "Exists"}]
    }
    assert capacity.flavor_fits(tolerating, virtual)
    t4 = {"nodeSelector": {"nvidia.com/gpu.product": "Tesla-T4"}}
    assert [capacity.flavor_fits(t4, f) for f in (gpu, cpu)] == [True, True]
