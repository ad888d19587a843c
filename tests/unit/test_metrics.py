"""The hub's metrics (aiinfn_hub/metrics.py): unit counts from a hand-built inventory, the
exposition a scrape gets, refusal reasons, and registration that happens once per registry."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest
from tornado import web
from traitlets.config import Config

from aiinfn_hub import catalog, metrics
from aiinfn_hub.errors import UserError, to_http_error
from aiinfn_hub.inventory import Inventory
from tests.unit.test_inventory import GPU, RESERVED_CMS, T4, VIRTUAL_TAINT, node, pod

CATALOG = catalog.load(catalog.default_path())
PROJECTS = set(CATALOG.projects)


def labelled(obj: dict, **labels: str) -> dict:
    obj["metadata"]["labels"].update(labels)
    return obj


def inventory() -> Inventory:
    """Two T4 nodes (one reserved for cms-ml, one cordoned) and a remote site: a notebook, a
    batch pod of cms-ml, a pod offloaded for cms-ml, one on the cordoned node."""
    inv = Inventory(CATALOG.accelerators)
    virtual = {"type": "virtual-kubelet"}
    remote = node("vk", None, {GPU: "16"}, taints=[VIRTUAL_TAINT], labels=virtual)
    inv.reset(
        [
            node("t4-a", T4, {GPU: "8"}),
            node("t4-b", T4, {GPU: "4"}, taints=[RESERVED_CMS]),
            node("t4-c", T4, {GPU: "2"}, unschedulable=True),
            remote,
        ],
        [
            labelled(pod("nb", "t4-a", {GPU: "2"}), **{"aiinfn.infn.it/accelerator": "t4"}),
            labelled(
                pod("job-1", "t4-b", {GPU: "1"}, job=True, job_name="j1"),
                **{"aiinfn.infn.it/project": "cms-ml", "aiinfn.infn.it/accelerator": "t4"},
            ),
            labelled(
                pod("job-2", "vk", {GPU: "3"}, job=True, job_name="j2"),
                **{"aiinfn.infn.it/project": "cms-ml", "aiinfn.infn.it/accelerator": "t4"},
            ),
            labelled(pod("unlabelled-remote", "vk", {GPU: "1"}, job=True)),
            pod("on-cordoned", "t4-c", {GPU: "1"}),
        ],
    )
    return inv


def test_unit_counts_by_state_and_project():
    counts = metrics.unit_counts(inventory(), PROJECTS)
    t4 = {state: counts.by_state["t4", state] for state in metrics.STATES}
    # Notebook capacity: t4-a (8) and t4-b (4, reserved: counted too); t4-c is cordoned.
    assert t4 == {"free": 9, "notebook": 2, "batch": 1, "offloaded": 3}
    assert counts.by_state["a100", "free"] == 0  # every catalog model, zeros included
    assert counts.by_project == {("cms-ml", "t4", "batch"): 1, ("cms-ml", "t4", "offloaded"): 3}


def test_free_notebook_and_batch_equal_the_inventorys_own_totals():
    inv = inventory()
    counts = metrics.unit_counts(inv, PROJECTS)
    for model, total in inv.totals().items():
        assert counts.by_state[model, "free"] == total.free
        assert counts.by_state[model, "notebook"] == total.notebooks
        assert counts.by_state[model, "batch"] == total.batch


def fake_platform(inv: Inventory, watches: tuple = (), synced: bool = True) -> SimpleNamespace:
    watcher = None
    if watches:
        watcher = SimpleNamespace(watches=watches, synced=asyncio.Event())
        if synced:
            watcher.synced.set()
    return SimpleNamespace(inventory=inv, catalog=CATALOG, watcher=watcher)


def fake_watch(name: str, synced: bool, last: float | None) -> SimpleNamespace:
    event = asyncio.Event()
    if synced:
        event.set()
    counts = {"events": 5, "bookmarks": 1, "relists": 2, "errors": 3, "expired": 1}
    return SimpleNamespace(name=name, synced=event, last_event_at=last, stats=lambda: counts)


def scrape(platform) -> str:
    registry = CollectorRegistry()
    metrics.register_hub(lambda: platform, registry)
    return generate_latest(registry).decode()


def test_a_scrape_shows_units_projects_and_watch_health():
    watches = (
        fake_watch("inventory nodes", True, 1700000000.5),
        fake_watch("inventory pods", False, None),
    )
    text = scrape(fake_platform(inventory(), watches))
    assert 'aiinfn_accelerator_units{model="t4",state="offloaded"} 3.0' in text
    assert 'aiinfn_accelerator_units{model="t4",state="free"} 9.0' in text
    assert 'aiinfn_accelerator_project_units{kind="batch",model="t4",project="cms-ml"} 1.0' in text
    assert 'aiinfn_inventory_watch_synced{resource="nodes"} 1.0' in text
    assert 'aiinfn_inventory_watch_synced{resource="pods"} 0.0' in text
    assert 'aiinfn_inventory_watch_last_event_timestamp_seconds{resource="nodes"} 1.7' in text
    assert 'last_event_timestamp_seconds{resource="pods"}' not in text  # no event yet
    assert 'aiinfn_inventory_watch_relists_total{resource="pods"} 2.0' in text
    assert 'aiinfn_inventory_watch_errors_total{resource="nodes"} 3.0' in text
    assert 'aiinfn_spawn_refusals_total{reason="capacity"}' in text


def test_before_the_inventory_is_listed_a_scrape_has_no_units():
    for platform in (None, fake_platform(inventory())):  # not loaded; loaded, not watching
        text = scrape(platform)
        assert "aiinfn_accelerator_units{" not in text
        assert "aiinfn_inventory_watch_synced{" not in text
        assert 'aiinfn_spawn_refusals_total{reason="policy"}' in text
    listing = fake_platform(inventory(), (fake_watch("inventory nodes", False, None),), False)
    text = scrape(listing)
    assert 'aiinfn_inventory_watch_synced{resource="nodes"} 0.0' in text
    assert "aiinfn_accelerator_units{" not in text


def test_with_accounting_on_a_scrape_shows_the_writers_queue_and_counters():
    writer = SimpleNamespace(
        pending=3, written=10, dropped=1, refused=0, failures=2, closed=4, last_commit_at=None
    )
    platform = fake_platform(inventory())
    text = scrape(SimpleNamespace(**vars(platform), accounting=writer))
    assert "aiinfn_accounting_queued_events 3.0" in text
    assert "aiinfn_accounting_written_events_total 10.0" in text
    assert "aiinfn_accounting_dropped_events_total 1.0" in text
    assert "aiinfn_accounting_refused_events_total 0.0" in text
    assert "aiinfn_accounting_write_failures_total 2.0" in text
    assert "aiinfn_accounting_reconciled_ends_total 4.0" in text
    assert "\naiinfn_accounting_last_commit_timestamp_seconds " not in text  # none yet
    writer.last_commit_at = 1700000000.0
    text = scrape(SimpleNamespace(**vars(platform), accounting=writer))
    assert "aiinfn_accounting_last_commit_timestamp_seconds 1.7e+09" in text
    assert "aiinfn_accounting_" not in scrape(platform)  # accounting off: no series


def test_registration_is_idempotent():
    registry = CollectorRegistry()
    assert metrics.register_hub(lambda: None, registry) is not None
    assert metrics.register_hub(lambda: None, registry) is None
    assert generate_latest(registry).decode().count("# TYPE aiinfn_spawn_refusals_total") == 1


def test_refusal_reasons():
    refused = UserError("no", reason="policy", status=403)
    assert metrics.refusal_reason(to_http_error(refused)) == "policy"
    # JupyterHub 5.x: a plain HTTPError; the status tells.
    assert metrics.refusal_reason(web.HTTPError(503, "%s", "full")) == "capacity"
    quota = UserError("quota used up", reason="quota", status=403)
    assert metrics.refusal_reason(to_http_error(quota)) == "quota"
    assert metrics.refusal_reason(web.HTTPError(409, "%s", "busy")) == "other"
    assert metrics.refusal_reason(web.HTTPError(500, "%s", "crash")) is None
    assert metrics.refusal_reason(TimeoutError()) is None


def test_counting_a_refusal_moves_its_series():
    series = metrics.SPAWN_REFUSALS.labels(reason="invalid")
    before = series._value.get()
    metrics.count_refusal(to_http_error(UserError("bad count")))
    metrics.count_refusal(RuntimeError("a bug"))
    assert series._value.get() == before + 1


CONFIG_FILE = Path(__file__).resolve().parents[2] / "jupyterhub_config.d" / "50-metrics.py"
ROLE = {
    "name": "prometheus",
    "description": "Read the hub's and the job service's metrics, nothing else",
    "scopes": ["read:metrics"],
    "services": ["prometheus"],
}


def run_50_metrics(config: Config) -> Config:
    exec(compile(CONFIG_FILE.read_text(), CONFIG_FILE.name, "exec"), {"c": config})
    return config


def test_50_metrics_registers_the_service_and_role_only_with_a_token(monkeypatch):
    monkeypatch.delenv("AIINFN_PROMETHEUS_API_TOKEN", raising=False)
    config = run_50_metrics(Config())
    assert config.JupyterHub.services.to_dict() == {}
    assert config.JupyterHub.load_roles.to_dict() == {}
    monkeypatch.setenv("AIINFN_PROMETHEUS_API_TOKEN", "s3cret")
    config = run_50_metrics(Config())
    assert config.JupyterHub.services.to_dict()["extend"] == [
        {"name": "prometheus", "api_token": "s3cret"}
    ]
    assert config.JupyterHub.load_roles.to_dict()["extend"] == [ROLE]


def test_50_metrics_adds_the_role_to_the_charts_service_once(monkeypatch):
    monkeypatch.delenv("AIINFN_PROMETHEUS_API_TOKEN", raising=False)
    config = Config()
    config.JupyterHub.services = [{"name": "prometheus", "api_token": "from-the-chart"}]
    config.JupyterHub.load_roles = []
    assert run_50_metrics(config).JupyterHub.load_roles == [ROLE]
    assert run_50_metrics(config).JupyterHub.load_roles == [ROLE]  # hub.loadRoles had it
    assert config.JupyterHub.services == [{"name": "prometheus", "api_token": "from-the-chart"}]
