"""Load jupyterhub_config.d/*.py in name order (10-..., 20-..., ...), the way z2jh's hub does,
then check the platform configuration (catalog, policies) so a mistake stops the hub at start.

Run with `jupyterhub -f jupyterhub_config.py`; later files override earlier ones.
"""

import glob
import os

from aiinfn_hub.hubstate import check_config

for _path in sorted(glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)), "jupyterhub_config.d", "*.py"))):
    load_subconfig(_path)  # noqa: F821 (provided by traitlets when it runs this file)

check_config(c)  # noqa: F821
