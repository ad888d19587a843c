# Login with INDIGO IAM (docs/auth.md). Client id and secret come from OAUTH_CLIENT_ID /
# OAUTH_CLIENT_SECRET in the hub's environment (never from this file); tokens are kept in
# encrypted auth_state, so the hub refuses to start without JUPYTERHUB_CRYPT_KEY.
# The demo (`aiinfn-dev demo`) replaces this authenticator with its own demo login.
c.JupyterHub.authenticator_class = "aiinfn"
c.AiInfnOAuthenticator.issuer = "https://iam.cloud.infn.it/"
# Who may log in: members of the catalog's projects (the default), and the admins.
c.AiInfnOAuthenticator.admin_groups = {"aiinfn-admins"}
# Groups that are neither projects nor named elsewhere in this configuration but should still
# become hub groups (e.g. for load_roles); every other IAM group is dropped.
c.AiInfnOAuthenticator.system_groups = set()
# Refresh tokens and groups at most every 5 minutes per user (on their requests and their
# servers' activity reports) and before every spawn; fetch a new access token with 15 minutes left.
c.AiInfnOAuthenticator.auth_refresh_age = 300
c.AiInfnOAuthenticator.access_token_refresh_margin = 900
