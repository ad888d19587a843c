"""Request + caller + platform rules -> JobPlan: catalog keys, the caller's groups and projects,
policy caps, offload rules. Refusals carry the reason and the right status."""

import pytest

from aiinfn_hub import catalog, policy
from aiinfn_hub.errors import UserError
from aiinfn_hub.services.base import HubUser
from aiinfn_hub.services.jobs.plan import (
    JobRules,
    NotebookFacts,
    SitePolicy,
    project_secrets,
    queue_name,
    resolve,
    site_policies,
)
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
    sites=(
        SitePolicy("infn-t1", "vk-t1", frozenset({"cpu", "gpu"}), juicefs_credentials=True),
        SitePolicy("podman-vm", "vk-podman-vm", frozenset({"cpu"})),
        SitePolicy("leonardo", "vk-leonardo", frozenset({"cpu", "gpu"}), max_runtime_seconds=86400),
    ),
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
    assert plan.retries == 3  # the service's backoff_limit


def test_retries_go_down_to_zero_and_up_to_the_services_limit():
    assert plan_for(ALICE, retries=0).retries == 0
    assert plan_for(ALICE, retries=3).retries == 3
    with pytest.raises(UserError, match="retries: at most 3 on this platform") as refused:
        plan_for(ALICE, retries=4)
    assert refused.value.status == 400


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
    """A job that may land remote ("may" as much as "only") mounts what every site can, and
    nothing unless asked: JuiceFS narrows the sites."""
    plan = plan_for(ALICE, accelerator="t4", **fields)
    assert (plan.volume_kinds, plan.juicefs_credentials) == ((), None)
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


RULE_SITES = ("infn-t1", "podman-vm", "leonardo")


def _rules(*sites):
    return JobRules(**{**RULES.__dict__, "sites": sites})


@pytest.mark.parametrize(
    "fields, sites",
    [
        ({"offload": "never"}, ()),
        ({"offload": "may", "volumes": []}, ("infn-t1", "podman-vm")),
        ({"offload": "only", "volumes": [], "deadline_seconds": 86400}, RULE_SITES),
        ({"offload": "only", "accelerator": "a100", "volumes": []}, ("infn-t1",)),
        ({"offload": "may", "confidential": True}, ()),
    ],
)
def test_a_job_is_offered_to_the_sites_whose_policy_accepts_it(fields, sites):
    assert plan_for(ALICE, **fields).sites == sites


def test_an_only_job_that_no_site_accepts_is_refused_naming_each_sites_rule():
    rules = _rules(*RULES.sites[1:])
    request = JobRequest(
        name="train", command=["true"], accelerator="a100", offload="only", volumes=[]
    )
    with pytest.raises(UserError) as error:
        resolve(request, ALICE, CATALOG, policy.for_user(DEFAULT, GROUPS, ALICE.groups), rules)
    assert (error.value.status, error.value.reason) == (400, "offload")
    assert error.value.message == (
        "no remote site accepts this job: podman-vm: accepts no GPU; leonardo: maximum run "
        "time 24 h (give a deadline_seconds of at most 86400)"
    )


def test_a_may_job_that_no_site_accepts_stays_local():
    request = JobRequest(name="t", command=["true"], accelerator="a100", offload="may", volumes=[])
    rules = _rules(*RULES.sites[1:2])
    job = resolve(request, ALICE, CATALOG, policy.for_user(DEFAULT, GROUPS, ALICE.groups), rules)
    assert (job.offload, job.sites) == ("may", ())


def test_a_confidential_job_is_never_sent_away():
    with pytest.raises(UserError) as error:
        plan_for(ALICE, offload="only", confidential=True, volumes=[])
    assert error.value.reason == "offload"
    assert error.value.message.startswith("a confidential job stays on local nodes")
    local = plan_for(ALICE, offload="may", confidential=True)
    assert (local.offload, local.sites) == ("never", ())


def test_site_policies_are_read_in_order_with_defaults():
    sites = site_policies(
        {
            "t1": {"flavor": "vk-t1", "accepts_accelerator_kinds": ["cpu", "gpu"]},
            "vm": {"flavor": "vk-vm", "max_runtime_seconds": 3600, "juicefs_credentials": True},
        },
        ("cpu", "gpu", "mig", "fpga"),
    )
    assert sites == (
        SitePolicy("t1", "vk-t1", frozenset({"cpu", "gpu"})),
        SitePolicy("vm", "vk-vm", frozenset({"cpu"}), 3600, True),
    )


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"accepts_accelerator_kinds": ["cpu"]}, "give a mapping with flavor"),
        ({"flavor": "f", "gpus": 1}, "give a mapping with flavor"),
        ({"flavor": "f", "accepts_accelerator_kinds": ["tpu"]}, "accepts_accelerator_kinds"),
        ({"flavor": "f", "accepts_accelerator_kinds": "cpu"}, "accepts_accelerator_kinds"),
        ({"flavor": "f", "max_runtime_seconds": "1h"}, "max_runtime_seconds"),
        ({"flavor": "f", "max_runtime_seconds": 10}, "max_runtime_seconds"),
        ({"flavor": "f", "juicefs_credentials": "yes"}, "juicefs_credentials"),
        ({"flavor": "f", "project_secrets": 1}, "project_secrets must be true or false"),
    ],
)
def test_bad_site_policies_are_refused_saying_what_is_wrong(entry, message):
    with pytest.raises(ValueError, match=message) as error:
        site_policies({"vm": entry}, ("cpu", "gpu", "mig", "fpga"))
    assert str(error.value).startswith("site 'vm': ")


def test_a_site_name_must_be_a_label_value():
    with pytest.raises(ValueError, match="site label value"):
        site_policies({"bad name": {"flavor": "f"}}, ("cpu",))


# -- data for jobs: JuiceFS credentials and project secrets ------------------------------------

JUICEFS_RULES = JobRules(**{**RULES.__dict__, "juicefs_credentials_secret": "juicefs-remote"})


def _plan(rules, **fields):
    request = JobRequest(name="t", command=["true"], **fields)
    return resolve(request, ALICE, CATALOG, policy.for_user(DEFAULT, GROUPS, ALICE.groups), rules)


MAY_AND_JUICEFS = (
    "a job that may run here or at a remote site cannot mount JuiceFS: here it is the cluster's "
    "volume, at a site the site's own mount, and a job carries only one; give offload 'only' (a "
    "remote site mounts it) or 'never' (mounted here)"
)


def test_juicefs_credentials_go_only_to_sites_that_allow_them():
    """An `only` job carries the credentials for the sites that allow them and no claim; a
    local job the claim and no credentials; a `may` job cannot have JuiceFS (one template)."""
    only = _plan(JUICEFS_RULES, offload="only", volumes=["juicefs"], deadline_seconds=3600)
    assert (only.volume_kinds, only.sites, only.juicefs_credentials) == (
        (),
        ("infn-t1",),
        "juicefs-remote",
    )
    local = _plan(JUICEFS_RULES, volumes=["juicefs"])
    assert (local.volume_kinds, local.sites, local.juicefs_credentials) == (("juicefs",), (), None)
    without = _plan(JUICEFS_RULES, offload="only", volumes=[], deadline_seconds=3600)
    assert (without.sites, without.juicefs_credentials) == (RULE_SITES, None)
    with pytest.raises(UserError) as error:
        _plan(JUICEFS_RULES, offload="may", volumes=["juicefs"], deadline_seconds=3600)
    assert (error.value.status, error.value.reason, error.value.message) == (
        400,
        "offload",
        MAY_AND_JUICEFS,
    )


def test_an_only_job_needing_juicefs_where_no_site_may_have_it_is_refused_naming_the_rule():
    rules = JobRules(**{**JUICEFS_RULES.__dict__, "sites": RULES.sites[1:]})
    with pytest.raises(UserError) as error:
        _plan(rules, offload="only", volumes=["juicefs"], deadline_seconds=3600)
    assert (error.value.status, error.value.reason) == (400, "offload")
    assert error.value.message == (
        "no remote site accepts this job: podman-vm: receives no JuiceFS credentials (ask for "
        "no juicefs volume); leonardo: receives no JuiceFS credentials (ask for no juicefs volume)"
    )


def test_without_a_credentials_secret_remote_jobs_cannot_have_juicefs():
    with pytest.raises(UserError) as error:
        _plan(RULES, offload="only", volumes=["juicefs"])
    assert error.value.message == (
        "no remote site can mount JuiceFS: this platform ships no JuiceFS credentials to remote "
        "sites; ask for no juicefs volume"
    )
    with pytest.raises(UserError, match="a job that may run here or at a remote site cannot"):
        _plan(RULES, offload="may", volumes=["juicefs"])


SECRET_SITES = (
    SitePolicy("infn-t1", "vk-t1", frozenset({"cpu", "gpu"}), project_secrets=True),
    SitePolicy("podman-vm", "vk-podman-vm", frozenset({"cpu"})),
)
SECRET_RULES = JobRules(
    **{**RULES.__dict__, "sites": SECRET_SITES, "project_secrets": {"cms-ml": ("db", "s3")}}
)


def test_project_secrets_go_with_the_projects_jobs_only_to_sites_that_take_them():
    assert _plan(SECRET_RULES).secrets == ("db", "s3")
    assert _plan(SECRET_RULES, offload="may", volumes=[]).sites == ("infn-t1",)
    rules = JobRules(**{**SECRET_RULES.__dict__, "sites": SECRET_SITES[1:]})
    with pytest.raises(UserError) as error:
        _plan(rules, offload="only", volumes=[])
    assert error.value.message == (
        "no remote site accepts this job: podman-vm: receives no project secrets (this "
        "project's jobs get db, s3)"
    )
    assert _plan(rules, offload="may", volumes=[]).sites == ()
    bob = resolve(
        JobRequest(name="t", command=["true"]),
        BOB,
        CATALOG,
        policy.for_user(DEFAULT, GROUPS, BOB.groups),
        SECRET_RULES,
    )
    assert bob.secrets == ()


def test_project_secrets_are_checked_against_the_catalog_and_the_platforms_own():
    assert project_secrets({"cms-ml": ["db-creds", "s3"]}, ["cms-ml"]) == {
        "cms-ml": ("db-creds", "s3")
    }
    for config, message in [
        ({"nope": ["db"]}, "project 'nope' is not in the catalog"),
        ({"cms-ml": "db"}, "give a list of Secret names"),
        ({"cms-ml": ["DB_creds"]}, "'DB_creds' is not a Secret name"),
        ({"cms-ml": ["aiinfn-token-alice"]}, "one of the platform's own Secrets"),
        ({"cms-ml": ["hub"]}, "one of the platform's own Secrets"),
        ({"cms-ml": ["db", "db"]}, "listed twice"),
    ]:
        with pytest.raises(ValueError, match=message):
            project_secrets(config, ["cms-ml"])
