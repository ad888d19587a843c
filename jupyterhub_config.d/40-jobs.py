# The job service: batch jobs and Bunshin clones of notebooks, queued by Kueue, at
# /services/jobs/ (REST API under api/, the jobs page at the root). JupyterHub runs it beside the
# hub; it reads this same configuration (its own settings are c.AiInfnJobs.*) and talks to
# Kubernetes with the hub pod's credentials, which need helm-values/jobs-service-rbac.yaml.
# It needs no hub scopes of its own: it learns who calls from the caller's token or OAuth cookie.
#
# Where the proxy reaches it: here, on the loopback beside the hub. Under z2jh the proxy is
# another pod, so helm-values/values.yaml registers `jobs` in hub.services with the hub Service's
# address (and has the service listen on the pod's addresses, c.AiInfnJobs.bind_url); that entry
# is completed here, and what it sets wins.
import os
import sys

from aiinfn_hub.services.base import HUB_CONFIG_ENV, hub_config_file

_jobs_service = {
    "name": "jobs",
    "url": "http://127.0.0.1:10101",
    "command": [sys.executable, "-m", "aiinfn_hub.services.jobs"],
    "environment": {
        HUB_CONFIG_ENV: hub_config_file(),
        # The page's login cookie: SameSite=Lax, as the hub's own cookies (10-hub.py).
        "JUPYTERHUB_COOKIE_OPTIONS": '{"samesite": "Lax"}',
        # A managed service inherits almost nothing from the hub: it gets the way to the API
        # server, and what z2jh's configuration file (which the service reads) needs: the
        # namespace and the Services' ports. Never the hub's secrets (OAUTH_CLIENT_SECRET...).
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
    [s for s in _services if s.get("name") == "jobs"] if isinstance(_services, list) else []
)
if _registered:
    _registered[0].update({**_jobs_service, **_registered[0]})
else:
    c.JupyterHub.services.append(_jobs_service)  # noqa: F821
# Users may reach the hub's services: this one and the backup service (45-backup.py), the pages
# and the REST APIs with their own tokens. One `user` role, here, for both: JupyterHub refuses a
# role defined twice in load_roles (neither merged nor overridden by name: "Role user multiply
# defined"), and outside z2jh each file of this folder is a configuration of its own, so a later
# file cannot extend this role.
_services_access = ["access:services!service=jobs", "access:services!service=backup"]
c.JupyterHub.load_roles.append(  # noqa: F821
    {
        "name": "user",
        "description": "Standard user privileges, and the job and backup services",
        "scopes": ["self", *_services_access],
    }
)
# ...and so may the token of their notebook servers, which `aiinfn jobs` and `aiinfn backup` use
# from a terminal.
c.Spawner.server_token_scopes = [  # noqa: F821
    "users:activity!user",
    "access:servers!server",
    *_services_access,
]
