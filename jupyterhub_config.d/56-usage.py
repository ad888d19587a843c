# The usage service (docs/usage.md): each user's GPU-hours and CPU-hours from the accounting
# ledger, with what is left of their quotas, at /services/usage/ (the page, a REST API under
# api/, CSV for admins). Only with accounting on (55-accounting.py): the database's URL set, in
# c.AiInfnAccounting.database_url or the hub's $AIINFN_ACCOUNTING_DATABASE_URL. JupyterHub runs
# it beside the hub; it reads this same configuration (its own settings are c.AiInfnUsage.*),
# needs no Kubernetes access and no hub scopes, and of the hub's environment it gets, beyond
# what every service gets (services/base.managed_service), the ledger's URL, which only the job
# service also gets (for quotas, 40-jobs.py) and no pod ever does.
#
# Where the proxy reaches it: here, on the loopback beside the hub. Under z2jh the proxy is
# another pod, so helm-values/values.yaml registers `usage` in hub.services with the hub
# Service's address (and has the service listen on the pod's addresses,
# c.AiInfnUsage.bind_url); that entry is completed here, and what it sets wins. Without
# accounting, that entry is taken out again: there is nothing to show.
import os

from aiinfn_hub.accounting.settings import URL_ENV, AiInfnAccounting
from aiinfn_hub.services.base import managed_service, register_service

_usage = managed_service("usage", 10103, "aiinfn_hub.services.usage")
if AiInfnAccounting(config=c).database_url:  # noqa: F821
    if os.environ.get(URL_ENV):
        _usage["environment"][URL_ENV] = os.environ[URL_ENV]
    register_service(c.JupyterHub.services, _usage)  # noqa: F821
elif isinstance(c.JupyterHub.services, list):  # noqa: F821 (z2jh's list: the chart's entry)
    _kept = [s for s in c.JupyterHub.services if s.get("name") != "usage"]  # noqa: F821
    c.JupyterHub.services = _kept  # noqa: F821
