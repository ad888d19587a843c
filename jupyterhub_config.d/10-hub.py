# Hub process: where it listens and how it reaches the proxy. Values a deployment overrides
# (z2jh sets most of them itself) stay defaults here.
c.JupyterHub.cleanup_servers = False
c.JupyterHub.allow_named_servers = True
c.JupyterHub.named_server_limit_per_user = 3
