"""`python -m aiinfn_hub.services.backup`: run the backup service (the hub starts it)."""

from .app import main

main()
