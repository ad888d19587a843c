"""The spawn page with one guard JupyterHub lacks: arguments that are not UTF-8 get 400, not 500.

JupyterHub's SpawnHandler decodes the query (GET) and the form fields (POST) with
`bytes.decode("utf8")` outside any error handling (jupyterhub/handlers/pages.py,
SpawnHandler._get and _post, in 5.5 and 6.x), so `accelerator=%ff%fe` is an unhandled
UnicodeDecodeError, a 500. No spawner hook runs before that decode, so this subclass checks
first; our authenticators register it (`Authenticator.get_handlers` routes are matched before
JupyterHub's own). A hub configured with another authenticator keeps JupyterHub's handler and its
500. Remove once JupyterHub answers 400 itself.
"""

from __future__ import annotations

from jupyterhub.handlers.pages import SpawnHandler

from .errors import UserError, to_http_error


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class AiInfnSpawnHandler(SpawnHandler):
    """JupyterHub's spawn page, refusing arguments it would fail to decode."""

    async def prepare(self) -> None:
        await super().prepare()  # who calls, and the _xsrf check of a POST, come first
        if not all(_is_utf8(v) for values in self.request.arguments.values() for v in values):
            raise to_http_error(
                UserError(
                    "the form or the link holds text that is not valid UTF-8", reason="invalid"
                )
            )


def handlers() -> list[tuple[str, type]]:
    """The spawn page's routes (JupyterHub's own patterns), for Authenticator.get_handlers."""
    return [
        (r"/spawn", AiInfnSpawnHandler),
        (r"/spawn/([^/]+)", AiInfnSpawnHandler),
        (r"/spawn/([^/]+)/([^/]+)", AiInfnSpawnHandler),
    ]
