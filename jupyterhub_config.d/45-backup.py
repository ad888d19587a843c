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
from aiinfn_hub.services.base import managed_service, register_service

register_service(
    c.JupyterHub.services,  # noqa: F821
    managed_service("backup", 10102, "aiinfn_hub.services.backup"),
)
