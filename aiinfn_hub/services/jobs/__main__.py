"""`python -m aiinfn_hub.services.jobs`: run the job service (JupyterHub starts it as a managed service)."""

from .app import main

main()
