# Hub process: where it listens and how it reaches the proxy. Values a deployment overrides
# (z2jh sets most of them itself) stay defaults here.
c.JupyterHub.cleanup_servers = False
c.JupyterHub.allow_named_servers = True
c.JupyterHub.named_server_limit_per_user = 3
# Cookies carry an explicit SameSite=Lax (JupyterHub 5.5 and 6.x set none, leaving it to each
# browser): requests other sites' pages make (forms, fetches, images) go without the hub's
# cookies, while following a link, and the identity provider's redirect back to the OAuth
# callback, still carry them. A link cannot start a server either way: /hub/spawn?<options>
# only pre-fills the form (docs/spawn.md). The user servers' cookies get the same options.
c.JupyterHub.tornado_settings.update({"cookie_options": {"samesite": "Lax"}})
