"""The backup image (images/backup/Dockerfile): Debian's borg 1.2 and `sh`, run by every backup,
check and restore Job. Tagged with the product's version; its user is `nobody`, which the Jobs
always replace with the uid they run as."""

from __future__ import annotations

IMAGE = "ghcr.io/aiinfn-hub/backup:0.1.0"
# USER 65534:65534 in the Dockerfile (Debian's nobody:nogroup).
UID = 65534
GID = 65534
