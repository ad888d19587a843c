"""aiinfn-hub: JupyterHub extensions for a shared, accelerator-aware AI development platform."""

__version__ = "0.1.0"
