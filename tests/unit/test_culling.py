"""Culling's pure parts: the rules by kind, the warning before a cull, the GPU windows, the
warnings file and the announcement, pod names as KubeSpawner makes them, the settings."""

from __future__ import annotations

import json
import time
import types
from pathlib import Path

import pytest
from traitlets import TraitError
from traitlets.config import Config

from aiinfn_hub.culling import arbiter, rules, service
from aiinfn_hub.culling.settings import AiInfnCulling
from aiinfn_hub.culling.warnings import WarningStore, read, user_announcement

LIMITS = rules.Limits(
    cpu_timeout=600, accelerator_timeout=100, max_age=1000, gpu_idle_time=50, warn_before=10
)


def server(inactive=0.0, age=0.0, accelerator=False, gpu_idle=None, exempt=False):
    return rules.Server(
        inactive=inactive, age=age, accelerator=accelerator, gpu_idle=gpu_idle, exempt=exempt
    )


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (server(inactive=595), rules.Verdict("inactive", 5)),
        (server(inactive=95, accelerator=True), rules.Verdict("inactive", 5)),
        (server(inactive=95), rules.Verdict("inactive", 505)),
        (server(inactive=0, age=999), rules.Verdict("age", 1)),
        (server(inactive=0, accelerator=True, gpu_idle=50), rules.Verdict("gpu-idle", 0)),
        # the GPU rule is for accelerator servers only, and needs a GPU signal
        (server(inactive=0, gpu_idle=50), rules.Verdict("inactive", 600)),
        (server(inactive=0, accelerator=True), rules.Verdict("inactive", 100)),
        (server(inactive=10_000, age=10_000, exempt=True), None),
    ],
)
def test_verdict_picks_the_rule_due_first(facts, expected):
    assert rules.verdict(LIMITS, facts) == expected


def test_rules_set_to_zero_are_off():
    off = rules.Limits(0, 0, 0, 0, 10)
    assert rules.verdict(off, server(inactive=10**6, age=10**6, gpu_idle=10**6)) is None


@pytest.mark.parametrize(
    ("left", "warned_for", "expected"),
    [
        (11, None, rules.Action.KEEP),
        (10, None, rules.Action.WARN),
        (0, None, rules.Action.WARN),  # due, but never warned: warn first
        (-50, 9.9, rules.Action.WARN),  # warned too recently
        (0, 10, rules.Action.CULL),
        (5, 100, rules.Action.WARN),  # warned long ago, not due yet
    ],
)
def test_a_server_is_culled_only_after_a_warning_warn_before_old(left, warned_for, expected):
    found = rules.Verdict("inactive", left)
    assert rules.action(LIMITS, found, warned_for) is expected


def test_without_warnings_a_due_server_is_culled_at_once():
    limits = rules.Limits(600, 100, 0, 0, warn_before=0)
    assert rules.action(limits, rules.Verdict("inactive", 0), None) is rules.Action.CULL
    assert rules.action(limits, rules.Verdict("inactive", 1), None) is rules.Action.KEEP


def test_due_in_is_never_before_the_warning_is_old_enough():
    found = rules.Verdict("gpu-idle", -30)
    assert rules.due_in(LIMITS, found, None) == 10
    assert rules.due_in(LIMITS, found, 4) == 6
    assert rules.due_in(LIMITS, rules.Verdict("inactive", 8), 1) == 9


def test_gpu_windows_and_idle_seconds():
    assert rules.gpu_windows(LIMITS) == (50, 40)
    assert rules.gpu_windows(rules.Limits(1, 1, 0, 5, 10)) == (5,)
    assert rules.gpu_windows(rules.Limits(1, 1, 0, 0, 10)) == ()
    assert rules.gpu_idle_seconds({}, 100) is None
    assert rules.gpu_idle_seconds({50: True, 40: True}, 100) == 50
    assert rules.gpu_idle_seconds({50: False, 40: True}, 100) == 40
    assert rules.gpu_idle_seconds({50: False, 40: False}, 100) == 0
    # a server younger than a window cannot have been idle for all of it
    assert rules.gpu_idle_seconds({50: True, 40: True}, 45) == 40


def test_messages_say_why_when_and_how_to_keep_the_server():
    gpu = rules.message(rules.Verdict("gpu-idle", 0), 600, "'train'", 5)
    assert gpu == (
        "Your server 'train' will be stopped in about 10 minutes: its accelerators have been "
        "below 5% busy for a long time, even if the notebook is in use. To keep it: run work on "
        "the accelerator, or stop this server and start a CPU-only one for work that needs no "
        "accelerator."
    )
    idle = rules.message(rules.Verdict("inactive", 30), 30, "(default)", 5)
    assert "in about 1 minute:" in idle and "has not been used" in idle
    assert "cannot be extended" in rules.message(rules.Verdict("age", 60), 60, "x", 5)


def test_warning_store_keeps_the_first_warning_time_and_forgets_stale_ones(tmp_path):
    path = str(tmp_path / "warnings.json")
    store = WarningStore(path, stale_after=30)
    store.warn("alice/", "alice", "2026-01-01T00:00:00Z", 100.0, "first")
    store.warn("alice/", "alice", "2026-01-01T00:00:00Z", 110.0, "second")
    assert store.warned_for("alice/", "2026-01-01T00:00:00Z", 115.0) == 15.0
    # a new start of the same server is a new server
    assert store.warned_for("alice/", "2026-01-02T00:00:00Z", 115.0) is None
    again = WarningStore(path, stale_after=30)
    assert again.servers["alice/"]["message"] == "second"
    again.warn("bob/gpu", "bob", "s", 200.0, "bob's")
    assert set(read(path)) == {"bob/gpu"}  # alice's, not seen for 90 s, is gone
    again.clear("bob/gpu", 201.0)
    assert read(path) == {}


def test_read_ignores_what_is_not_a_warnings_file(tmp_path):
    path = tmp_path / "w.json"
    assert read(str(path)) == {}
    path.write_text("{not json")
    assert read(str(path)) == {}
    path.write_text(json.dumps({"version": 99, "servers": {"a/": {}}}))
    assert read(str(path)) == {}


def test_announcement_shows_each_user_their_warnings_escaped(tmp_path):
    path = str(tmp_path / "warnings.json")
    store = WarningStore(path, stale_after=1e9)
    store.warn("alice/", "alice", "s", 1.0, "<b>stop</b> soon")
    store.warn("alice/x", "alice", "s", 1.0, "x too")
    store.warn("bob/", "bob", "s", 1.0, "bob's")
    announce = user_announcement(path, 1e12, before="Maintenance on Monday")
    alice = types.SimpleNamespace(name="alice")
    assert announce(alice) == "&lt;b&gt;stop&lt;/b&gt; soon<br>x too<br>Maintenance on Monday"
    assert announce(types.SimpleNamespace(name="carol")) == "Maintenance on Monday"
    assert announce(None) == "Maintenance on Monday"
    assert user_announcement(path, 1e12)(types.SimpleNamespace(name="bob")) == "bob&#x27;s"
    # entries not refreshed by a running culler are not shown
    assert user_announcement(path, 10)(alice) == ""


@pytest.mark.parametrize(
    ("template", "user", "server", "expected"),
    [
        ("jupyter-{user_server}", "alice", "", "jupyter-alice"),
        ("jupyter-{user_server}", "alice", "gpu", "jupyter-alice--gpu"),
        ("jupyter-{username}--{servername}", "alice", "", "jupyter-alice"),
    ],
)
def test_pod_names_are_kubespawners(template, user, server, expected):
    assert arbiter.pod_name(template, "safe", user, server) == expected


def test_pod_names_of_unusual_users_are_kubespawners_safe_slugs():
    from kubespawner.slugs import safe_slug

    name = arbiter.pod_name("jupyter-{user_server}", "safe", "Élodie@x", "")
    assert name == f"jupyter-{safe_slug('Élodie@x', max_length=48)}"
    with pytest.raises(ValueError, match="userid"):
        arbiter.check_template("jupyter-{userid}")


def test_gpu_query_matches_the_pod_by_dcgm_exporters_labels():
    assert arbiter.gpu_query("jhub", 'jupyter-a"b', 90.5, arbiter.GPU_METRIC) == (
        'max(max_over_time(DCGM_FI_DEV_GPU_UTIL{namespace="jhub",pod="jupyter-a\\"b"}[90s]))'
    )
    # a MIG slice's profiling ratio, in percent
    assert arbiter.gpu_query("jhub", "p", 60, ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", 100.0)) == (
        '100 * max(max_over_time(DCGM_FI_PROF_GR_ENGINE_ACTIVE{namespace="jhub",pod="p"}[60s]))'
    )


def test_age_from_the_server_model():
    assert arbiter.age_seconds("2026-01-01T00:00:10.000000Z", 1767225620.0) == 10.0
    assert arbiter.age_seconds(None, 5.0) == 0.0


def test_settings_are_checked_and_give_limits():
    config = Config()
    config.AiInfnCulling.gpu_idle_time = 3600
    settings = AiInfnCulling(config=config)
    assert settings.limits().gpu_idle_time == 0  # no Prometheus, no GPU rule
    config.AiInfnCulling.prometheus_url = "http://prometheus:9090"
    assert AiInfnCulling(config=config).limits().gpu_idle_time == 3600
    wrong = [
        ("cpu_timeout", -1),
        ("check_every", 0),
        ("gpu_idle_threshold", 0),
        ("prometheus_url", "prometheus:9090"),
    ]
    for name, value in wrong:
        with pytest.raises(TraitError, match=name):
            setattr(settings, name, value)


def test_a_warning_as_long_as_a_rule_is_refused():
    config = Config()
    config.AiInfnCulling.warn_before = 600
    config.AiInfnCulling.accelerator_timeout = 600
    with pytest.raises(
        TraitError,
        match="warn_before .600 s. must be shorter than c.AiInfnCulling.accelerator_timeout",
    ):
        AiInfnCulling(config=config).limits()
    config.AiInfnCulling.accelerator_timeout = 0  # off: no constraint
    assert AiInfnCulling(config=config).limits().accelerator_timeout == 0


def test_the_role_has_only_what_the_culler_needs():
    assert service.role() == {
        "name": "aiinfn-culler",
        "description": (
            "Stop idle servers (docs/culling.md): list them, read activity and groups"
        ),
        "scopes": [
            "list:users", "read:users:activity", "read:servers", "delete:servers",
            "read:users:groups",
        ],
        "services": ["aiinfn-culler"],
    }  # fmt: skip


def test_configure_gives_idle_culler_the_arbiter_and_the_hubs_pod_naming(monkeypatch, tmp_path):
    monkeypatch.setenv("JUPYTERHUB_API_URL", "http://127.0.0.1:8081/hub/api/")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "t")
    monkeypatch.chdir(tmp_path)
    config = Config()
    config.AiInfnCulling.check_every = 30
    config.AiInfnCulling.exempt_groups = ["admins"]
    config.KubeSpawner.namespace = "jhub"
    service.configure(config)
    hook = config.IdleCuller.cull_arbiter_hook
    assert (config.IdleCuller.cull_every, config.IdleCuller.max_age) == (30, 0)
    assert (config.IdleCuller.cull_users, config.IdleCuller.config_file) == (False, "")
    assert (hook.namespace, hook.pod_template, hook.slug_scheme) == (
        "jhub",
        "jupyter-{user_server}",
        "safe",
    )
    assert hook.hub_url == "http://127.0.0.1:8081/hub/api"
    assert hook.mig_metric == "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
    assert hook.exempt_groups == {"admins"} and hook.store.stale_after == 90
    assert hook.store.path == str(tmp_path / "aiinfn-culling-warnings.json")


CONFIG_FILE = Path(__file__).resolve().parents[2] / "jupyterhub_config.d" / "60-culling.py"


def run_60_culling(config: Config) -> Config:
    """60-culling.py as z2jh runs it: in the configuration's namespace, after hub.config."""
    exec(compile(CONFIG_FILE.read_text(), CONFIG_FILE.name, "exec"), {"c": config})
    return config


def test_60_culling_does_nothing_unless_enabled():
    config = run_60_culling(Config())
    assert "services" not in config.JupyterHub and "template_vars" not in config.JupyterHub


def test_60_culling_registers_the_service_its_role_and_the_announcement(tmp_path):
    config = Config()
    config.AiInfnCulling.enabled = True
    config.AiInfnCulling.warnings_file = str(tmp_path / "w.json")
    config.JupyterHub.template_vars = {"announcement": "Maintenance on Monday"}
    run_60_culling(config)
    [entry] = config.JupyterHub.services.to_dict()["extend"]
    assert entry["name"] == "aiinfn-culler" and "url" not in entry and "api_token" not in entry
    assert entry["command"][1:] == ["-m", "aiinfn_hub.culling"]
    assert set(entry["environment"]) <= {"AIINFN_HUB_CONFIG", "POD_NAMESPACE"}
    assert config.JupyterHub.load_roles.to_dict()["extend"] == [service.role()]
    WarningStore(str(tmp_path / "w.json"), 1e9).warn("a/", "a", "s", time.time(), "stop")
    announce = config.JupyterHub.template_vars["announcement"]
    assert announce(types.SimpleNamespace(name="a")) == "stop<br>Maintenance on Monday"


def test_60_culling_keeps_a_role_of_that_name_the_chart_loaded():
    config = Config()
    config.AiInfnCulling.enabled = True
    chart_role = {"name": "aiinfn-culler", "scopes": ["read:servers"], "services": ["x"]}
    config.JupyterHub.load_roles = [chart_role]
    run_60_culling(config)
    assert config.JupyterHub.load_roles == [chart_role]
