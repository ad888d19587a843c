# The backup service (docs/backup.md): users' archives, browsing and self-service restores at
# /services/backup/ (REST API under api/). JupyterHub runs it beside the hub; it reads this same
# configuration (its own settings are c.AiInfnBackup.*) and talks to Kubernetes with the hub
# pod's credentials, which need helm-values/backup-service-rbac.yaml. It needs no hub scopes of
# its own: it learns who calls from the caller's token or OAuth cookie. Users and their notebook
# servers' tokens may reach it by the `user` role and server_token_scopes of 40-jobs.py (one
# role for both services: JupyterHub refuses a role defined twice).
#
# Where the proxy reaches it: here, on the loopback beside the hub. Under z2jh the proxy is
# another pod, so helm-values/values.yaml registers `backup` in hub.services with the hub
# Service's address (and has the service listen on the pod's addresses,
# c.AiInfnBackup.bind_url); that entry is completed here, and what it sets wins.
import os
import sys

from aiinfn_hub.services.base import HUB_CONFIG_ENV, hub_config_file

_backup_service = {
    "name": "backup",
    "url": "http://127.0.0.1:10102",
    "command": [sys.executable, "-m", "aiinfn_hub.services.backup"],
    "environment": {
        HUB_CONFIG_ENV: hub_config_file(),
        # The page's login cookie: SameSite=Lax, as the hub's own cookies (10-hub.py).
        "JUPYTERHUB_COOKIE_OPTIONS": '{"samesite": "Lax"}',
        # As the job service (40-jobs.py): the way to the API server and what z2jh's
        # configuration file needs, never the hub's secrets.
        **{
            name: value
            for name, value in os.environ.items()
            if name in ("KUBECONFIG", "POD_NAMESPACE")
            or name.endswith(("_SERVICE_HOST", "_SERVICE_PORT"))
        },
    },
    # An admin-run service: its page logs users in without a confirmation page, and its OAuth
    # tokens may only identify the user and reach this service.
    "oauth_no_confirm": True,
    "oauth_client_allowed_scopes": [],
}
_services = c.JupyterHub.services  # noqa: F821
_registered = (
    [s for s in _services if s.get("name") == "backup"] if isinstance(_services, list) else []
)
if _registered:
    _registered[0].update({**_backup_service, **_registered[0]})
else:
    c.JupyterHub.services.append(_backup_service)  # noqa: F821
