"""Load jupyterhub_config.d/*.py in name order (10-..., 20-..., ...), the way z2jh's hub does,
then check the configuration and the cluster once the hub has its whole configuration (also
what a file including this one sets after it): an error stops the hub, naming what is wrong
(aiinfn_hub/checks.py; `aiinfn-hub check` runs the same checks for admins).

Run with `jupyterhub -f jupyterhub_config.py`; later files override earlier ones.
"""

import glob
import os

from aiinfn_hub.checks import check_at_hub_start

for _path in sorted(glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)), "jupyterhub_config.d", "*.py"))):
    load_subconfig(_path)  # noqa: F821 (provided by traitlets when it runs this file)

check_at_hub_start()
