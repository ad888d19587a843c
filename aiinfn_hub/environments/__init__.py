"""Software environments: managed ones under /envs (curators), the users' own under ~/envs,
as Jupyter kernels (`kernels.py`), from `aiinfn envs` (`cli.py`) and in batch jobs."""
