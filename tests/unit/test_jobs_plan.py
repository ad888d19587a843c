"""Request + caller + platform rules -> JobPlan: catalog keys, the caller's groups and projects,
policy caps, offload rules. Refusals carry the reason and the right status."""

import pytest

from aiinfn_hub import catalog, policy
from aiinfn_hub.errors import UserError
from aiinfn_hub.services.base import HubUser
from aiinfn_hub.services.jobs.plan import JobRules, NotebookFacts, queue_name, resolve
from aiinfn_hub.services.jobs.request import SCRIPT_KEY, CloneRequest, JobRequest

CATALOG = catalog.load(catalog.default_path())
RULES = JobRules(
    priorities={"low": "aiinfn-low", "normal": "aiinfn-normal", "high": "aiinfn-high"},
    default_priority="normal",
    default_ttl_seconds=3600,
    sandbox_path="/aiinfn/sandbox",
    storage_kinds=("home", "projects", "scratch", "juicefs"),
    remote_volume_kinds=frozenset({"juicefs"}),
    offload_accelerator_kinds=frozenset({"cpu", "gpu"}),
)
GROUPS = {
    "cms-ml": policy.parse_rules(
        {"accelerators": "*", "environments": "*", "max_accelerators": 2}, CATALOG, "g"
    ),
    "lhcb-flashsim": policy.parse_rules(
        {
            "accelerators": ["cpu", "t4"],
            "environments": ["cpu", "ml-gpu"],
            "max_accelerators": 1,
            "max_cpu": "8",
            "max_memory": "32Gi",
        },
        CATALOG,
        "g",
    ),
}
DEFAULT = policy.parse_rules(
    {
        "accelerators": ["cpu"],
        "environments": ["cpu", "ml-gpu"],
        "max_cpu": "4",
        "max_memory": "16Gi",
    },
    CATALOG,
    "default",
)
ALICE = HubUser("alice", frozenset({"cms-ml"}), False)
BOB = HubUser("bob", frozenset({"lhcb-flashsim", "staff"}), False)
CAROL = HubUser("carol", frozenset({"cms-ml", "lhcb-flashsim"}), False)
DAVE = HubUser("dave", frozenset({"staff"}), False)
NOTEBOOK = NotebookFacts(
    accelerator="t4", count=1, cpu="4", memory="16Gi", volume_kinds=("home", "projects", "scratch")
)


def plan_for(caller, notebook=None, **fields):
    model = CloneRequest if notebook else JobRequest
    request = model(**{"name": "train", "command": ["python", "train.py"], **fields})
    return resolve(
        request, caller, CATALOG, policy.for_user(DEFAULT, GROUPS, caller.groups), RULES, notebook
    )


def test_a_cpu_job_in_the_only_project_with_the_catalog_defaults():
    plan = plan_for(ALICE)
    assert (plan.kind, plan.owner, plan.project, plan.queue) == (
        "batch",
        "alice",
        "cms-ml",
        "project-cms-2dml",
    )
    assert (plan.accelerator.key, plan.count, plan.cpu, plan.memory) == ("cpu", 0, "2", "8Gi")
    assert plan.image == "harbor.cloud.infn.it/ai-infn/cpu:2025.10"  # the catalog's first for CPU
    assert (plan.priority, plan.priority_class, plan.ttl_seconds) == (
        "normal",
        "aiinfn-normal",
        3600,
    )
    assert plan.volume_kinds == ("home", "projects", "juicefs")
    assert plan.resources == {"cpu": "2", "memory": "8Gi"}
    assert (plan.completions, plan.parallelism, plan.working_dir) == (1, 1, None)


def test_a_gpu_indexed_job_with_files_runs_in_its_sandbox():
    plan = plan_for(
        ALICE,
        accelerator="a100",
        count=2,
        environment="qml",
        completions=300,
        priority="high",
        files={"train.py": "print(1)"},
        memory="64Gi",
    )
    assert plan.resources == {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "2"}
    assert plan.image == "harbor.cloud.infn.it/ai-infn/qml-gpu:2025.10"
    assert (plan.completions, plan.parallelism) == (300, 100)
    assert plan.priority_class == "aiinfn-high"
    assert plan.working_dir == "/aiinfn/sandbox" and plan.sandbox == {"train.py": "print(1)"}


def test_a_script_runs_from_the_sandbox():
    plan = plan_for(ALICE, command=None, script="#!/usr/bin/env python3\nprint(1)\n")
    assert plan.command == (f"/aiinfn/sandbox/{SCRIPT_KEY}",)
    assert plan.sandbox == {SCRIPT_KEY: "#!/usr/bin/env python3\nprint(1)\n"}


def test_projects_pick_the_queue_and_must_be_the_callers():
    assert plan_for(CAROL, project="lhcb-flashsim").queue == "project-lhcb-2dflashsim"
    with pytest.raises(
        UserError, match="choose a project for this job: cms-ml, lhcb-flashsim"
    ) as error:
        plan_for(CAROL)
    assert error.value.status == 400
    with pytest.raises(
        UserError, match="not a member of a project called 'cms-ml'; yours: lhcb-flashsim"
    ) as error:
        plan_for(BOB, project="cms-ml")
    assert error.value.status == 403
    with pytest.raises(UserError, match="you are in no project") as error:
        plan_for(DAVE)
    assert error.value.status == 403
    with pytest.raises(UserError, match="not a member of a project called 'staff'"):
        plan_for(BOB, project="staff")


@pytest.mark.parametrize(
    "caller, fields, message, status",
    [
        (ALICE, {"accelerator": "h100"}, "unknown accelerator 'h100'", 400),
        (
            ALICE,
            {"accelerator": "a100", "count": 3},
            "count for NVIDIA A100 80GB must be one of 1, 2",
            400,
        ),
        (ALICE, {"count": 1}, "count must be 0 or absent for CPU-only jobs", 400),
        (ALICE, {"environment": "nope"}, "unknown environment 'nope'", 400),
        (
            ALICE,
            {"accelerator": "t4", "environment": "cpu"},
            "does not support NVIDIA Tesla T4",
            400,
        ),
        (
            ALICE,
            {"priority": "urgent"},
            "unknown priority 'urgent'; choose one of low, normal, high",
            400,
        ),
        (BOB, {"accelerator": "a100"}, "NVIDIA A100 80GB is not available to your groups", 403),
        (
            BOB,
            {"accelerator": "t4", "count": 2},
            "over your limit of 1 accelerator per job pod",
            403,
        ),
        (BOB, {"environment": "qml"}, "environment 'qml' is not available to your groups", 403),
        (BOB, {"cpu": "16"}, "over your CPU or memory limit", 403),
        (BOB, {"memory": "64Gi"}, "over your CPU or memory limit", 403),
        (ALICE, {"memory": "500m"}, "memory must be at least 1Mi", 400),
        (ALICE, {"cpu": "0"}, "cpu must be more than 0", 400),
    ],
)
def test_refusals_name_the_reason(caller, fields, message, status):
    with pytest.raises(UserError, match=message) as error:
        plan_for(caller, **fields)
    assert error.value.status == status


@pytest.mark.parametrize(
    "fields, offload",
    [({}, "never"), ({"offloadable": True}, "may"), ({"offload": "may"}, "may")]
    + [({"offload": "only"}, "only"), ({"offload": "never"}, "never")],
)
def test_the_plan_says_where_a_job_may_run(fields, offload):
    assert plan_for(ALICE, accelerator="t4", volumes=[], **fields).offload == offload


@pytest.mark.parametrize("fields", [{"offloadable": True}, {"offload": "may"}, {"offload": "only"}])
def test_offloadable_jobs_mount_only_what_a_remote_site_can(fields):
    """A job that may land remote ("may" as much as "only") mounts what every site can."""
    plan = plan_for(ALICE, accelerator="t4", **fields)
    assert plan.volume_kinds == ("juicefs",)
    with pytest.raises(UserError) as error:
        plan_for(ALICE, volumes=["home", "juicefs"], **fields)
    assert error.value.message == (
        "an offloadable job may run at a remote site, "
        "which cannot mount home (local storage such as NFS); "
        "remote sites mount: juicefs and the job's sandbox files"
    )
    with pytest.raises(UserError, match="remote sites offer no A100 MIG slice 1g.10gb"):
        plan_for(ALICE, accelerator="a100-mig-1g-10gb", **fields)


def test_volumes_must_be_available():
    rules_without_juicefs = RULES.__class__(
        **{**RULES.__dict__, "storage_kinds": ("home", "projects", "scratch")}
    )
    request = JobRequest(name="x", command=["x"], volumes=["juicefs"])
    with pytest.raises(UserError, match="volume\\(s\\) not available to this job: juicefs"):
        resolve(
            request,
            ALICE,
            CATALOG,
            policy.for_user(DEFAULT, GROUPS, ALICE.groups),
            rules_without_juicefs,
        )
    assert plan_for(ALICE, volumes=["scratch"]).volume_kinds == ("scratch",)
    assert plan_for(ALICE, volumes=[]).volume_kinds == ()


def test_clones_default_to_the_notebook_and_stay_within_policy():
    plan = plan_for(ALICE, notebook=NOTEBOOK)
    assert (plan.kind, plan.accelerator.key, plan.count, plan.cpu, plan.memory) == (
        "bunshin",
        "t4",
        1,
        "4",
        "16Gi",
    )
    assert plan.image is None and plan.volume_kinds == ("home", "projects", "scratch")
    assert plan_for(ALICE, notebook=NOTEBOOK, accelerator="a100").count == 1
    assert plan_for(ALICE, notebook=NOTEBOOK, count=2).count == 2
    assert plan_for(ALICE, notebook=NOTEBOOK, offloadable=True).volume_kinds == ()
    with pytest.raises(UserError, match="volume\\(s\\) not available to this job: juicefs"):
        plan_for(ALICE, notebook=NOTEBOOK, volumes=["juicefs"])
    with pytest.raises(UserError, match="over your limit of 1 accelerator per job pod"):
        plan_for(BOB, notebook=NOTEBOOK, count=2)


def test_queue_names_are_the_injective_project_slug():
    assert queue_name("cms-ml") == "project-cms-2dml"
    assert queue_name("lhcb/flashsim") != queue_name("lhcb-flashsim")
