"""`python -m aiinfn_hub.culling`: the culler (the hub starts it as the service aiinfn-culler)."""

from .service import main

main()
