"""helm-values/values.yaml is valid for the pinned z2jh chart and agrees with itself, with
jupyterhub_config.d/ and with the other files of helm-values/ (one namespace placeholder, one
hub account). Their objects meet the real API server in tests/integration/test_helm_values.py.

The chart's schema is read from an unpacked chart 4.4.0 named by $AIINFN_Z2JH_CHART:
`helm pull jupyterhub --repo https://hub.jupyter.org/helm-chart/ --version 4.4.0 --untar`
(values.schema.json), or the chart folder of the z2jh repository at tag 4.4.0 (.yaml).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

from tests.helm_values import (
    BACKUP_PORT,
    JOBS_PORT,
    NAMESPACE,
    REPO,
    component_labels,
    helm_merge,
    object_files,
    objects,
    values,
)

CHART_VERSION, CHART_APP_VERSION = "4.4.0", "5.5.0"
USAGE_PORT = 10103
CHART_ENV = "AIINFN_Z2JH_CHART"
CONFIG_D = REPO / "jupyterhub_config.d"


def chart() -> Path:
    path = os.environ.get(CHART_ENV)
    if not path:
        pytest.skip(
            f"${CHART_ENV} names no unpacked z2jh chart {CHART_VERSION} "
            "(see this module's docstring)"
        )
    return Path(path)


def schema_errors(chart_dir: Path, overrides: dict) -> list[str]:
    """What the chart's schema says of these values merged over the chart's own, as helm does."""
    schema_file = next(
        p
        for p in (chart_dir / "values.schema.json", chart_dir / "values.schema.yaml")
        if p.is_file()
    )
    schema = yaml.safe_load(schema_file.read_text())
    merged = helm_merge(yaml.safe_load((chart_dir / "values.yaml").read_text()), overrides)
    return sorted(
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(merged)
    )


def test_values_are_valid_for_the_pinned_chart():
    chart_dir = chart()
    meta = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    # A packaged chart carries its version; the repository's source, chartpress's placeholder.
    assert meta["appVersion"] == CHART_APP_VERSION
    assert meta["version"] in (CHART_VERSION, "0.0.1-set.by.chartpress")
    assert schema_errors(chart_dir, values()) == []


def test_the_schema_check_refuses_a_misspelt_key():
    misspelt = helm_merge(values(), {"singleuser": {"storage": {"tpye": "none"}}})
    assert schema_errors(chart(), misspelt) == [
        "singleuser.storage: Additional properties are not allowed ('tpye' was unexpected)"
    ]


@pytest.mark.parametrize(
    ("service", "config_class", "port"),
    [
        ("jobs", "AiInfnJobs", JOBS_PORT),
        ("backup", "AiInfnBackup", BACKUP_PORT),
        ("usage", "AiInfnUsage", USAGE_PORT),
    ],
)
def test_a_services_port_agrees_everywhere(service, config_class, port):
    hub = values()["hub"]
    url = urlsplit(hub["services"][service]["url"])
    assert (url.scheme, url.hostname, url.port) == ("http", "hub", port)  # the hub Service
    bind = urlsplit(hub["config"][config_class]["bind_url"])
    assert (bind.hostname, bind.port) == ("0.0.0.0", port)
    assert {"name": service, "port": port, "targetPort": port, "protocol": "TCP"} in hub["service"][
        "extraPorts"
    ]


def test_the_proxy_reaches_the_services_ports_and_nothing_else():
    hub, proxy = values()["hub"], values()["proxy"]
    assert [p["name"] for p in hub["service"]["extraPorts"]] == ["jobs", "backup", "usage"]
    only_ports = [
        {"port": port, "protocol": "TCP"} for port in (JOBS_PORT, BACKUP_PORT, USAGE_PORT)
    ]
    assert hub["networkPolicy"]["ingress"] == [
        {"from": [{"podSelector": {"matchLabels": component_labels("proxy")}}], "ports": only_ports}
    ]
    assert proxy["chp"]["networkPolicy"]["egress"] == [
        {"to": [{"podSelector": {"matchLabels": component_labels("hub")}}], "ports": only_ports}
    ]


def test_notebooks_are_told_where_the_services_are():
    env = values()["singleuser"]["extraEnv"]
    assert env["AIINFN_JOBS_URL"] == "http://proxy-public/services/jobs/"
    assert env["AIINFN_BACKUP_URL"] == "http://proxy-public/services/backup/"
    assert env["AIINFN_USAGE_URL"] == "http://proxy-public/services/usage/"


def config_d(services: list[dict] | None = None) -> Config:
    """jupyterhub_config.d/ loaded into one configuration; with `services`, after a hub.services
    registration as z2jh's configuration file makes it (a plain list, before the files)."""
    config = Config()
    if services is not None:
        config.JupyterHub.services = services
    for path in sorted(CONFIG_D.glob("*.py")):
        if services is not None and path.name in ("40-jobs.py", "45-backup.py", "56-usage.py"):
            exec(compile(path.read_text(), path.name, "exec"), {"c": config})  # as z2jh does
        else:
            config.merge(PyFileConfigLoader(path.name, path=str(CONFIG_D)).load_config())
    return config


def test_values_state_what_jupyterhub_config_d_sets_alike():
    hub, config = values()["hub"], config_d()
    assert (
        hub["config"]["JupyterHub"]["authenticator_class"] == config.JupyterHub.authenticator_class
    )
    assert hub["allowNamedServers"] == config.JupyterHub.allow_named_servers
    assert hub["namedServerLimitPerUser"] == config.JupyterHub.named_server_limit_per_user


def test_40_jobs_completes_the_charts_registration_of_the_job_service():
    registered = [{"name": key, **service} for key, service in values()["hub"]["services"].items()]
    services = {s["name"]: s for s in config_d(registered).JupyterHub.services}
    assert set(services) == {"jobs", "backup", "prometheus"}  # no accounting: no usage
    jobs = services["jobs"]
    assert jobs["url"] == f"http://hub:{JOBS_PORT}"
    assert jobs["command"] == [sys.executable, "-m", "aiinfn_hub.services.jobs"]
    assert (jobs["oauth_no_confirm"], jobs["oauth_client_allowed_scopes"]) == (True, [])


def test_40_jobs_registers_the_job_service_beside_a_hub_without_the_chart(monkeypatch):
    monkeypatch.setenv("OAUTH_CLIENT_SECRET", "never passed on")
    monkeypatch.setenv("POD_NAMESPACE", "jhub")
    monkeypatch.setenv("PROXY_API_SERVICE_PORT", "8001")
    services = config_d().JupyterHub.services.to_dict()["extend"]
    [jobs] = [s for s in services if s["name"] == "jobs"]
    assert jobs["url"] == f"http://127.0.0.1:{JOBS_PORT}"
    # What z2jh's configuration file needs when the service reads it; never the hub's secrets.
    passed = {"POD_NAMESPACE": "jhub", "PROXY_API_SERVICE_PORT": "8001"}
    assert passed.items() <= jobs["environment"].items()
    assert "OAUTH_CLIENT_SECRET" not in jobs["environment"]


def test_56_usage_completes_the_charts_registration_with_accounting_on(monkeypatch):
    monkeypatch.setenv("AIINFN_ACCOUNTING_DATABASE_URL", "postgresql://u:p@db:5432/acct")
    registered = [{"name": key, **service} for key, service in values()["hub"]["services"].items()]
    usage = {s["name"]: s for s in config_d(registered).JupyterHub.services}["usage"]
    assert usage["url"] == f"http://hub:{USAGE_PORT}"
    assert usage["command"] == [sys.executable, "-m", "aiinfn_hub.services.usage"]
    assert usage["environment"]["AIINFN_ACCOUNTING_DATABASE_URL"] == "postgresql://u:p@db:5432/acct"


def test_45_backup_completes_the_charts_registration_of_the_backup_service():
    registered = [{"name": key, **service} for key, service in values()["hub"]["services"].items()]
    services = {s["name"]: s for s in config_d(registered).JupyterHub.services}
    backup = services["backup"]
    assert backup["url"] == f"http://hub:{BACKUP_PORT}"
    assert backup["command"] == [sys.executable, "-m", "aiinfn_hub.services.backup"]
    assert (backup["oauth_no_confirm"], backup["oauth_client_allowed_scopes"]) == (True, [])
    assert "api_token" not in backup and "oauth_roles" not in backup  # no hub scopes of its own


def test_45_backup_registers_the_backup_service_beside_a_hub_without_the_chart(monkeypatch):
    monkeypatch.setenv("OAUTH_CLIENT_SECRET", "never passed on")
    monkeypatch.setenv("POD_NAMESPACE", "jhub")
    monkeypatch.setenv("PROXY_API_SERVICE_PORT", "8001")
    monkeypatch.setenv("KUBECONFIG", "/etc/hub/kubeconfig")
    services = {s["name"]: s for s in config_d().JupyterHub.services.to_dict()["extend"]}
    assert set(services) == {"jobs", "backup"}
    backup = services["backup"]
    assert backup["url"] == f"http://127.0.0.1:{BACKUP_PORT}"
    passed = {
        "POD_NAMESPACE": "jhub",
        "PROXY_API_SERVICE_PORT": "8001",
        "KUBECONFIG": "/etc/hub/kubeconfig",
        "AIINFN_HUB_CONFIG": "",  # the hub's configuration file, once a hub loads this
        "JUPYTERHUB_COOKIE_OPTIONS": '{"samesite": "Lax"}',
    }
    assert passed.items() <= backup["environment"].items()
    assert "OAUTH_CLIENT_SECRET" not in backup["environment"]


def roles(config: Config) -> list[dict]:
    value = config.JupyterHub.load_roles
    return value if isinstance(value, list) else value.to_dict()["extend"]


@pytest.mark.parametrize("chart", [False, True], ids=["without-chart", "with-chart"])
def test_users_and_their_notebooks_reach_every_service_through_one_user_role(chart):
    """JupyterHub refuses a role named twice in load_roles: one `user` role, with every
    service's access, and the notebook servers' tokens reach them (`aiinfn jobs|backup|usage`)."""
    registered = [{"name": key, **s} for key, s in values()["hub"]["services"].items()]
    config = config_d(registered if chart else None)
    user_roles = [r for r in roles(config) if r["name"] == "user"]
    access = [f"access:services!service={name}" for name in ("jobs", "backup", "usage")]
    assert [r["scopes"] for r in user_roles] == [["self", *access]]
    assert config.Spawner.server_token_scopes == [
        "users:activity!user",
        "access:servers!server",
        *access,
    ]


def test_the_hubs_secrets_come_from_secrets():
    for name, entry in values()["hub"]["extraEnv"].items():
        assert set(entry) == {"valueFrom"}, name
        assert set(entry["valueFrom"]) == {"secretKeyRef"}, name


def test_notebook_settings_leave_storage_placement_and_priority_to_the_spawner():
    chart_values = values()
    singleuser, scheduling = chart_values["singleuser"], chart_values["scheduling"]
    assert singleuser["storage"] == {"type": "none"}  # the spawner mounts storage.yaml's claims
    assert singleuser["cloudMetadata"]["blockWithIptables"] is False  # a privileged init container
    assert singleuser["networkPolicy"]["egressAllowRules"]["cloudMetadataServer"] is False
    assert scheduling["userScheduler"]["enabled"] is False  # one scheduler for notebooks and jobs
    assert "podPriority" not in scheduling  # the spawner's aiinfn-notebook, not the chart's class
    spawners = {"image", "cpu", "memory", "extraResource", "nodeSelector", "profileList"}
    assert spawners.isdisjoint(singleuser)


def test_one_namespace_placeholder_and_one_hub_account_in_every_file():
    for path in object_files():
        for document in objects(path):
            where = f"{path.name}: {document['kind']} {document['metadata']['name']}"
            assert document["metadata"].get("namespace", NAMESPACE) == NAMESPACE, where
            claim = document.get("spec", {}).get("claimRef")
            assert claim is None or claim["namespace"] == NAMESPACE, where
            for subject in document.get("subjects", []):
                assert subject == {
                    "kind": "ServiceAccount",
                    "name": "hub",
                    "namespace": NAMESPACE,
                }, where
