"""Idle culling that knows about accelerators (docs/culling.md): jupyterhub-idle-culler run as
the hub-managed service `aiinfn-culler`, deciding per server with rules.py."""
