"""`python -m aiinfn_hub.services.usage`: run the usage service (the hub starts it)."""

from .app import main

main()
