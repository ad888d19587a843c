"""`python -m aiinfn_hub.services.jobs`: run the job service (the hub starts it as a service)."""

from .app import main

main()
