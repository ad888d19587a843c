"""Load jupyterhub_config.d/*.py in name order (10-..., 20-..., ...), the way z2jh's hub does.
The last of them (90-checks.py) checks the configuration and the cluster once the hub has its
whole configuration: an error stops the hub, naming what is wrong.

Run with `jupyterhub -f jupyterhub_config.py`; later files override earlier ones.
"""

import glob
import os

for _path in sorted(
    glob.glob(
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "jupyterhub_config.d", "*.py")
    )
):
    load_subconfig(_path)  # noqa: F821 (provided by traitlets when it runs this file)
