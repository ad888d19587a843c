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
from aiinfn_hub.accounting.settings import service_environment
from aiinfn_hub.services.base import managed_service, register_service

_jobs = managed_service("jobs", 10101, "aiinfn_hub.services.jobs")
# GPU-hour quotas at submission (docs/accounting.md, "Quotas"): the service reads the ledger, so
# it gets the hub's AIINFN_ACCOUNTING_DATABASE_URL, when set (it queries only with quotas set).
_jobs["environment"].update(service_environment())
register_service(c.JupyterHub.services, _jobs)  # noqa: F821
# Users may reach the hub's services: this one, the backup service (45-backup.py) and the usage
# service (56-usage.py, with accounting on), the pages and the REST APIs with their own tokens.
# One `user` role, here, for all: JupyterHub refuses a role defined twice in load_roles (neither
# merged nor overridden by name: "Role user multiply defined"), and outside z2jh each file of this
# folder is a configuration of its own, so a later file cannot extend this role.
_services_access = [
    "access:services!service=jobs",
    "access:services!service=backup",
    "access:services!service=usage",  # 56-usage.py, with accounting on
]
c.JupyterHub.load_roles.append(  # noqa: F821
    {
        "name": "user",
        "description": "Standard user privileges, and the job, backup and usage services",
        "scopes": ["self", *_services_access],
    }
)
# ...and so may the token of their notebook servers, which `aiinfn jobs|backup|usage` use
# from a terminal.
c.Spawner.server_token_scopes = [  # noqa: F821
    "users:activity!user",
    "access:servers!server",
    *_services_access,
]
