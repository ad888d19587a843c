"""The one error type the dev cluster raises: a one-line problem and its fix."""


class DevClusterError(RuntimeError):
    """Shown to the person as one line; the CLI exits non-zero with it."""
