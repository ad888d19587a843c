# Login with INDIGO IAM. Client id and secret come from OAUTH_CLIENT_ID / OAUTH_CLIENT_SECRET in
# the hub's environment (never from this file); tokens are kept in encrypted auth_state, which
# needs JUPYTERHUB_CRYPT_KEY.
c.JupyterHub.authenticator_class = "aiinfn"
