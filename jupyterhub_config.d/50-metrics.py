# Monitoring (docs/monitoring.md): the hub's own metrics at /hub/metrics get aiinfn-hub's
# (accelerator units by model, state and project, spawn refusals, the inventory watch's health),
# and Prometheus scrapes them as the service `prometheus`, whose token has the role `prometheus`:
# `read:metrics` and nothing else. The job service checks that same scope on its /metrics.
#
# Under z2jh, helm-values/values.yaml registers the service (the chart makes its token and keeps
# it in the Secret `hub`, key hub.services.prometheus.apiToken) and the role (hub.loadRoles).
# Elsewhere, set AIINFN_PROMETHEUS_API_TOKEN in the hub's environment to register both here.
import os

from aiinfn_hub.services.base import hub_config_file

if hub_config_file():  # in the hub process only; a service that reads this file has its own
    from aiinfn_hub import metrics
    from aiinfn_hub.spawner import AiInfnSpawner

    metrics.register_hub(lambda: AiInfnSpawner._shared)


def _listed(value):
    """A list setting as set so far: a plain list (z2jh's), or what was appended to it."""
    return value if isinstance(value, list) else value.to_dict().get("extend", [])


_token = os.environ.get("AIINFN_PROMETHEUS_API_TOKEN")
_services = _listed(c.JupyterHub.services)  # noqa: F821
_prometheus = any(s.get("name") == "prometheus" for s in _services)
if not _prometheus and _token:
    c.JupyterHub.services.append({"name": "prometheus", "api_token": _token})  # noqa: F821
    _prometheus = True
if _prometheus and not any(
    r.get("name") == "prometheus"
    for r in _listed(c.JupyterHub.load_roles)  # noqa: F821
):
    c.JupyterHub.load_roles.append(  # noqa: F821
        {
            "name": "prometheus",
            "description": "Read the hub's and the job service's metrics, nothing else",
            "scopes": ["read:metrics"],
            "services": ["prometheus"],
        }
    )
