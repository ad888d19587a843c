# The job service: batch jobs and Bunshin clones of notebooks, queued by Kueue, at
# /services/jobs/ (REST API under api/, the jobs page at the root). JupyterHub runs it beside the
# hub; it reads this same configuration (its own settings are c.AiInfnJobs.*) and talks to
# Kubernetes with the hub pod's credentials, which need helm-values/jobs-service-rbac.yaml.
# It needs no hub scopes of its own: it learns who calls from the caller's token or OAuth cookie.
import os
import sys

from aiinfn_hub.services.base import HUB_CONFIG_ENV, hub_config_file

c.JupyterHub.services.append({  # noqa: F821
    "name": "jobs",
    "url": "http://127.0.0.1:10101",
    "command": [sys.executable, "-m", "aiinfn_hub.services.jobs"],
    "environment": {
        HUB_CONFIG_ENV: hub_config_file(),
        # The page's login cookie: SameSite=Lax, as the hub's own cookies (10-hub.py).
        "JUPYTERHUB_COOKIE_OPTIONS": '{"samesite": "Lax"}',
        **{name: os.environ[name] for name in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")
           if name in os.environ},
    },
    # An admin-run service: its page logs users in without a confirmation page, and its OAuth
    # tokens may only identify the user and reach this service.
    "oauth_no_confirm": True,
    "oauth_client_allowed_scopes": [],
})
# Users may reach the service (the page, and the REST API with their own tokens)...
c.JupyterHub.load_roles.append({  # noqa: F821
    "name": "user",
    "description": "Standard user privileges, and the job service",
    "scopes": ["self", "access:services!service=jobs"],
})
# ...and so may the token of their notebook servers, which `aiinfn jobs` uses from a terminal.
c.Spawner.server_token_scopes = ["users:activity!user", "access:servers!server", "access:services!service=jobs"]  # noqa: F821
