"""User-facing errors: a message for the user, separate detail for the log.

Raise `UserError` from validation code; the spawner and the services turn it into JupyterHub's
`SpawnException` (6.x) or a plain `HTTPError` with the same status and message (5.x, where the
caller logs the detail itself). Anything
else is a bug: it is logged with its traceback and the user sees a generic error.
"""

from __future__ import annotations

import logging

from tornado import web

try:
    from jupyterhub.spawner import SpawnException
except ImportError:  # JupyterHub 5.x
    SpawnException = None


class UserError(ValueError):
    """A refusal the user can act on. `message` is shown; `log_detail` only logged."""

    def __init__(
        self, message: str, *, reason: str = "invalid", log_detail: str = "", status: int = 400
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.log_detail = log_detail or message
        self.status = status


def to_http_error(error: UserError) -> web.HTTPError:
    """The exception JupyterHub relays to the browser or the REST client with error.status."""
    if SpawnException is not None:
        http_error = SpawnException(
            error.message,
            reason=error.reason,
            log_message=error.log_detail,
            status_code=error.status,
        )
    else:
        http_error = web.HTTPError(error.status, "%s", error.message)
    # What pages show: JupyterHub 6's spawn form and progress events otherwise show str(exception),
    # "403 SpawnException(reason=policy): <log detail>".
    http_error.jupyterhub_message = error.message
    # The refusal's reason for the metrics (metrics.refusal_reason): JupyterHub 5.5 has no
    # SpawnException, and tornado's own `reason` is the HTTP reason phrase.
    http_error.aiinfn_reason = error.reason
    return http_error


class OnlyPrefilled(Exception):
    """Raised by Spawner.options_from_query: JupyterHub then shows the spawn form (pre-filled)
    instead of starting a server for a GET of /hub/spawn?<options>. Not an HTTPError: 200."""

    jupyterhub_message = ""  # no error box on the form; the form's own notice says what happened

    def __init__(self) -> None:
        super().__init__("options in a /hub/spawn link only pre-fill the form; nothing was started")


class HidePrefilledTraceback(logging.Filter):
    """Drops the ERROR with traceback that JupyterHub logs whenever options_from_query raises
    ("Failed to spawn single-user server with query arguments"): for OnlyPrefilled nothing
    failed, and a link visited by every user of a course would fill the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], OnlyPrefilled))


HIDE_PREFILLED_TRACEBACK = HidePrefilledTraceback()
