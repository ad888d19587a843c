"""What every aiinfn-hub service shares: the process lifecycle and the hub-authenticated handler.

A service is a traitlets Application run by JupyterHub as a managed service (or standalone with
the same environment): it reads the hub's own configuration file, so it sees exactly the
settings the hub and the spawner use; `setup()` makes its clients, `cleanup()` closes them, and
SIGTERM, SIGINT or the death of the process that started it stop it after the requests in
flight. Handlers learn who calls from the hub (an API token or the OAuth cookie of the
service's pages), never from a request body, and answer errors as JSON: a UserError's message
and status, anything else a logged 500.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import secrets
import signal
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from jupyterhub.services.auth import (
    HubOAuth,
    HubOAuthCallbackHandler,
    HubOAuthenticated,
    UserNotAllowed,
)
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.ioloop import PeriodicCallback
from traitlets import Unicode, default
from traitlets.config import Application

from ..errors import UserError
from . import pages

HUB_CONFIG_ENV = "AIINFN_HUB_CONFIG"
STOP_GRACE_SECONDS = 10.0
PARENT_CHECK_MS = 2000


def hub_config_file() -> str:
    """The configuration file of the JupyterHub process loading this configuration (absolute),
    for a managed service to read the same settings; '' when not loaded by a hub."""
    app = sys.modules.get("jupyterhub.app")  # a hub has imported it; a service need not
    if app is None or not app.JupyterHub.initialized():
        return ""
    # Application singletons share one slot: in a service process it may hold the service's app.
    hub = app.JupyterHub._instance
    return os.path.abspath(hub.config_file) if isinstance(hub, app.JupyterHub) else ""


def managed_service(name: str, port: int, module: str) -> dict[str, Any]:
    """How the hub runs one of our services beside it (jupyterhub_config.d): `python -m module`
    on the loopback at `port`, reading the hub's own configuration file. A managed service
    inherits almost nothing from the hub: it gets the way to the API server and what z2jh's
    configuration file (which the service reads) needs, the namespace and the Services' ports;
    never the hub's secrets (OAUTH_CLIENT_SECRET...). Its pages log users in without a
    confirmation page, and its OAuth tokens may only identify the user and reach it."""
    passed = {
        key: value
        for key, value in os.environ.items()
        if key in ("KUBECONFIG", "POD_NAMESPACE")
        or key.endswith(("_SERVICE_HOST", "_SERVICE_PORT"))
    }
    return {
        "name": name,
        "url": f"http://127.0.0.1:{port}",
        "command": [sys.executable, "-m", module],
        "environment": {
            HUB_CONFIG_ENV: hub_config_file(),
            # The page's login cookie: SameSite=Lax, as the hub's own cookies (10-hub.py).
            "JUPYTERHUB_COOKIE_OPTIONS": '{"samesite": "Lax"}',
            **passed,
        },
        "oauth_no_confirm": True,
        "oauth_client_allowed_scopes": [],
    }


def register_service(services: Any, entry: dict[str, Any]) -> None:
    """Add `entry` to c.JupyterHub.services, or complete the entry of that name a chart put
    there (z2jh's hub.services: its address and token), whose own settings win."""
    registered = (
        [s for s in services if s.get("name") == entry["name"]]
        if isinstance(services, list)
        else []
    )
    if registered:
        registered[0].update({**entry, **registered[0]})
    else:
        services.append(entry)


class Unauthenticated(UserError):
    """ "Who are you?": 401 with a Bearer challenge (RFC 9110 11.6.1, RFC 6750 3), which tells a
    client to send a token; 403 stays for callers who are known but may not do something."""

    def __init__(self, realm: str, sent_credentials: bool) -> None:
        if sent_credentials:
            message = (
                "the token sent is not valid (unknown, expired or revoked); "
                "send a current JupyterHub API token"
            )
            challenge = f'Bearer realm="{realm}", error="invalid_token"'
        else:
            message = (
                "authentication required: send a JupyterHub API token "
                "(Authorization: token ...) or log in"
            )
            challenge = f'Bearer realm="{realm}"'
        super().__init__(message, reason="unauthenticated", status=401)
        self.headers = {"WWW-Authenticate": challenge}


@dataclass(frozen=True)
class HubUser:
    """The caller, as the hub knows them."""

    name: str
    groups: frozenset[str]
    admin: bool


class ServiceHandler(HubOAuthenticated, web.RequestHandler):
    """Base handler: the caller from the hub (token or OAuth cookie), errors as JSON."""

    hub_user: HubUser | None = None
    not_allowed: bool = False
    forged: bool = False

    def initialize(self) -> None:
        self.hub_auth = self.settings["hub_auth"]

    async def prepare(self) -> None:
        model = await self.hub_auth.get_user(self, sync=False)
        if model:
            try:
                model = self.check_hub_user(model)
            except UserNotAllowed:
                self.not_allowed, model = True, None
        self.current_user = model
        if (
            model is None
            and self.request.method not in ("GET", "HEAD", "OPTIONS")
            and self.get_cookie(self.hub_auth.cookie_name)
        ):
            # The hub ignores a login cookie on a form post that fails its XSRF check: the caller
            # is known, the request is not theirs to make.
            try:
                self.check_xsrf_cookie()
            except web.HTTPError:
                self.forged = True
        if model and model.get("kind", "user") == "user":
            self.hub_user = HubUser(
                model["name"], frozenset(model.get("groups") or ()), bool(model.get("admin"))
            )

    def caller(self) -> HubUser:
        """The calling user. 401 when the hub does not know who calls (no credentials, or a token
        it does not accept); 403 for services and for tokens without access to this service."""
        if self.hub_user is None:
            if self.forged:
                raise UserError(
                    "this form is out of date or was not sent from this site (XSRF "
                    "check failed); reload the page",
                    reason="forbidden",
                    status=403,
                )
            if self.not_allowed:
                raise UserError(
                    "this token may not use this service", reason="forbidden", status=403
                )
            if self.current_user:
                raise UserError("only users can use this service", reason="forbidden", status=403)
            raise Unauthenticated(
                self.settings.get("auth_realm", "jupyterhub"),
                bool(self.request.headers.get("Authorization")),
            )
        return self.hub_user

    def write_api_root(self, service: str, caller: HubUser, **more: Any) -> None:
        """GET api/: which service this is, who calls, and where its OpenAPI document is."""
        self.write_json(
            {
                "service": service,
                "user": caller.name,
                **more,
                "openapi": self.settings["service_prefix"] + "api/openapi.json",
            }
        )

    def write_json(self, document: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(document))

    def as_user_error(self, error: BaseException | None) -> UserError | None:
        """Override to answer some failures (say, a backend that is down) with a message."""
        return error if isinstance(error, UserError) else None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = self.as_user_error(kwargs.get("exc_info", (None, None, None))[1])
        if error is not None:
            status_code, message = error.status, error.message
            self.set_status(status_code)
            for name, value in getattr(error, "headers", {}).items():
                self.set_header(name, value)
        else:
            message = (
                self._reason
                if status_code < 500
                else "internal error; the service log has the details"
            )
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps({"status": status_code, "message": message}))

    def log_exception(self, typ, value, tb) -> None:  # noqa: ANN001 (tornado's signature)
        error = self.as_user_error(value)
        if error is not None:
            logging.getLogger(__name__).log(
                logging.WARNING if error.status >= 500 else logging.INFO,
                "%s %s refused (%d): %s",
                self.request.method,
                self.request.path,
                error.status,
                error.log_detail,
            )
            return
        super().log_exception(typ, value, tb)


class OpenApiHandler(ServiceHandler):
    """The API description (the application's `openapi` setting: a function that returns it);
    public, like the hub's own REST API documentation."""

    async def prepare(self) -> None:
        pass

    def get(self) -> None:
        self.write_json(self.settings["openapi"]())


class OAuthCallbackHandler(HubOAuthCallbackHandler):
    """The end of the page login: with the app's HubOAuth, which holds the login's PKCE verifier."""

    def initialize(self) -> None:
        self.hub_auth = self.settings["hub_auth"]


class NotFoundHandler(ServiceHandler):
    """Unknown paths: a JSON 404, without asking the hub who calls."""

    async def prepare(self) -> None:
        raise UserError("no such resource", reason="not-found", status=404)


class ServiceApp(Application):
    """A hub service process: reads the hub's configuration, serves its handlers, stops cleanly."""

    hub_config = Unicode(
        config=True,
        help=f"""The hub's configuration file (the service reads the platform's, the storage's and
        its own settings from it; docs/design.md says why). Default: ${HUB_CONFIG_ENV}, else
        jupyterhub_config.py in the working directory (where JupyterHub itself looks).""",
    )
    service_url = Unicode(
        config=True,
        help="Where to listen (scheme://host:port). Default: $JUPYTERHUB_SERVICE_URL, set by the "
        "hub.",
    )
    service_prefix = Unicode(
        config=True,
        help="URL prefix the proxy routes to this service. Default: $JUPYTERHUB_SERVICE_PREFIX.",
    )
    bind_url = Unicode(
        config=True,
        help="""Where to listen, when not at service_url: in a z2jh hub pod the proxy reaches the
        service as http://hub:PORT, so it listens on http://0.0.0.0:PORT. Default: service_url.""",
    )
    aliases = {"hub-config": "ServiceApp.hub_config", "log-level": "Application.log_level"}
    # A configuration that does not load must stop the service, not leave it on defaults.
    raise_config_file_errors = True

    @default("hub_config")
    def _default_hub_config(self) -> str:
        return os.environ.get(HUB_CONFIG_ENV) or "jupyterhub_config.py"

    @default("service_url")
    def _default_service_url(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101")

    @default("bind_url")
    def _default_bind_url(self) -> str:
        return self.service_url

    @default("service_prefix")
    def _default_service_prefix(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")

    def initialize(self, argv: list[str] | None = None) -> None:
        """Command line first (it may name the config file), then the hub's configuration."""
        self.parse_command_line(argv)
        if not os.path.isfile(self.hub_config):
            raise SystemExit(
                f"{self.name}: the hub configuration {self.hub_config!r} does not exist "
                f"(set ${HUB_CONFIG_ENV} or --hub-config)"
            )
        # The file is the hub's; what the command line says still wins.
        self.load_config_file(
            os.path.basename(self.hub_config),
            path=os.path.dirname(os.path.abspath(self.hub_config)),
        )
        logging.basicConfig(
            level=self.log_level, format="[%(levelname)1.1s %(asctime)s %(name)s] %(message)s"
        )

    def handlers(self) -> list[tuple]:
        """The service's routes, relative to service_prefix."""
        raise NotImplementedError

    def tornado_settings(self) -> dict[str, Any]:
        """Extra tornado settings for the service's handlers."""
        return {}

    async def setup(self) -> None:
        """Make clients and check settings; raise SystemExit with the reason to refuse to start."""

    async def cleanup(self) -> None:
        """Close clients."""

    def make_app(self) -> web.Application:
        hub_auth = HubOAuth(parent=self, cache_max_age=60)
        prefix = self.service_prefix.rstrip("/") + "/"
        routes = [
            (prefix + "oauth_callback", OAuthCallbackHandler),
            *((prefix + path, *rest) for path, *rest in self.handlers()),
        ]
        return web.Application(
            routes,
            hub_auth=hub_auth,
            cookie_secret=secrets.token_bytes(32),
            auth_realm=self.name,
            default_handler_class=NotFoundHandler,
            page_links=pages.service_links(
                self.config.JupyterHub.get("services"),
                hub_auth.hub_prefix.removesuffix("hub/"),
            ),
            **self.tornado_settings(),
        )

    async def serve(self) -> None:
        """Run until SIGTERM or SIGINT, then stop accepting, let requests finish, clean up."""
        await self.setup()
        url = urlparse(self.bind_url)
        server = HTTPServer(self.make_app(), xheaders=True)
        # Everything loaded so far (JupyterHub, the clients, the catalog) lives as long as the
        # process: keep it out of the collector, whose full passes would otherwise pause requests.
        gc.collect()
        gc.freeze()
        server.listen(url.port or 80, address=url.hostname or "127.0.0.1")
        self.log.info(
            "%s listening on %s, serving %s", self.name, self.bind_url, self.service_prefix
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        # A hub that dies without stopping its managed services leaves them to init: stop too,
        # rather than hold the port and answer for a hub that is gone.
        parent = os.getppid()
        watch = PeriodicCallback(
            lambda: stop.set() if os.getppid() != parent else None, PARENT_CHECK_MS
        )
        watch.start()
        try:
            await stop.wait()
            watch.stop()
            self.log.info("%s stopping", self.name)
            server.stop()
            try:
                await asyncio.wait_for(server.close_all_connections(), STOP_GRACE_SECONDS)
            except TimeoutError:
                self.log.warning(
                    "%s: requests still running after %.0fs; stopping anyway",
                    self.name,
                    STOP_GRACE_SECONDS,
                )
        finally:
            await self.cleanup()

    def start(self) -> None:
        asyncio.run(self.serve())
