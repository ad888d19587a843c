# Idle culling (docs/culling.md): with c.AiInfnCulling.enabled (helm-values/values.yaml sets
# it), the hub runs jupyterhub-idle-culler as the managed service `aiinfn-culler`, with its own
# token and the role `aiinfn-culler` (list users, read activity, groups and servers, stop
# servers; nothing else), deciding per server by aiinfn_hub/culling (timeouts by kind, a
# maximum age, an idle-GPU rule from Prometheus, exempt groups). The warnings it gives before
# stopping a server are shown to their user on the hub's pages (the `announcement`).
#
# z2jh's own culler (the chart's `cull`) is turned off in values.yaml: one culler decides.
from aiinfn_hub.culling import service
from aiinfn_hub.culling.settings import SERVICE_NAME, AiInfnCulling
from aiinfn_hub.culling.warnings import user_announcement
from aiinfn_hub.services.base import register_service

_culling = AiInfnCulling(config=c)  # noqa: F821
if _culling.enabled:
    _culling.limits()  # refuses a warning lead time as long as a rule's, naming the keys
    register_service(c.JupyterHub.services, service.service_entry())  # noqa: F821
    _roles = c.JupyterHub.load_roles  # noqa: F821
    _listed = _roles if isinstance(_roles, list) else _roles.to_dict().get("extend", [])
    if not any(r.get("name") == SERVICE_NAME for r in _listed):
        _roles.append(service.role())
    _vars = c.JupyterHub.template_vars  # noqa: F821
    _before = (_vars if isinstance(_vars, dict) else _vars.to_dict().get("update", {})).get(
        "announcement"
    )
    _vars.update(
        {
            "announcement": user_announcement(
                _culling.warnings_path(), 3 * _culling.check_every, _before
            )
        }
    )
