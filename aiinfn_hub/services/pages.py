"""Service pages in the hub's own look: the hub's `page.html` (navigation bar, Bootstrap theme,
dark mode toggle) around each service's content, its styles and scripts served by the hub.

A page template lives in `aiinfn_hub/templates/`, starts with
`{% extends "service_page.html" %}` and fills `{% block main %}`. JupyterHub's own templates are
the fallback loader, so the base is the installed hub's `page.html`, whatever its version. The
page loads the hub's static files from the hub's prefix (same origin behind the proxy) and gets
a Content-Security-Policy allowing scripts only from this origin and the inline scripts the hub's
base page itself writes (by their SHA-256), never a page's own inline script or style attribute.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PackageLoader, select_autoescape
from jupyterhub._data import DATA_FILES_PATH
from tornado import web
from traitlets.config.loader import LazyConfigValue

_environment = Environment(
    loader=ChoiceLoader(
        [
            PackageLoader("aiinfn_hub", "templates"),
            FileSystemLoader(f"{DATA_FILES_PATH}/templates"),
        ]
    ),
    autoescape=select_autoescape(default=True, default_for_string=True),
)
_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.DOTALL)


@dataclass(frozen=True)
class PageUser:
    """The signed-in user as the hub's page template reads it."""

    name: str

    @property
    def json_escaped_name(self) -> str:
        """The name inside the base page's inline script: JSON-escaped, and <, > and & as \\u
        escapes, so no name can close the script element."""
        escaped = json.dumps(self.name)[1:-1]
        return escaped.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@dataclass(frozen=True)
class ServiceLink:
    """An entry of the navigation bar's Services menu."""

    name: str
    href: str


def service_links(services: Any, base_url: str) -> list[ServiceLink]:
    """The Services menu, as the hub builds it: every registered service with a URL that is not
    hidden (`display: False`), linked at {base_url}services/{name}/."""
    if isinstance(services, LazyConfigValue):  # a configuration file that appended to it
        services = services.get_value([])
    if not isinstance(services, list):
        return []
    return [
        ServiceLink(entry["name"], f"{base_url}services/{entry['name']}/")
        for entry in services
        if isinstance(entry, dict)
        and isinstance(entry.get("name"), str)
        and entry.get("url")
        and entry.get("display", True)
    ]


def content_security_policy(html: str) -> str:
    """Scripts and styles from this origin only, plus the hub base page's inline scripts by hash;
    images from this origin and data: (the hub's logo, icons); forms only back to this origin."""
    hashes = " ".join(
        "'sha256-{}'".format(
            base64.b64encode(hashlib.sha256(body.encode()).digest()).decode("ascii")
        )
        for body in _INLINE_SCRIPT.findall(html)
    )
    return (
        f"default-src 'none'; script-src 'self' {hashes}; style-src 'self'; "
        "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'self'; base-uri 'none'"
    )


def render_page(handler: web.RequestHandler, template: str, *, title: str, **context: Any) -> str:
    """The page `template` with the hub's frame around it, for the handler's signed-in user
    (`hub_user`, or none: the login link then)."""
    hub_auth = handler.settings["hub_auth"]
    hub_prefix = hub_auth.hub_prefix
    caller = getattr(handler, "hub_user", None)
    user = PageUser(caller.name) if caller is not None else None
    return _environment.get_template(template).render(
        title=title,
        user=user,
        admin_access=bool(caller and caller.admin),
        parsed_scopes={"admin-ui"} if caller is not None and caller.admin else set(),
        no_spawner_check=True,
        base_url=hub_prefix,
        prefix=hub_prefix.rsplit("hub/", 1)[0] or "/",
        logo_url="",
        login_url=f"{hub_prefix}login",
        logout_url=f"{hub_prefix}logout",
        static_url=lambda path, include_version=True: f"{hub_prefix}static/{path}",
        services=handler.settings.get("page_links", []),
        xsrf_token=handler.xsrf_token.decode("ascii"),
        version_hash="",
        announcement="",
        service_prefix=handler.settings.get("service_prefix", ""),
        **context,
    )


def finish_page(
    handler: web.RequestHandler, template: str, *, title: str, status: int = 200, **context: Any
) -> None:
    """Render the page, set its security headers and finish the request."""
    html = render_page(handler, template, title=title, **context)
    handler.set_status(status)
    handler.set_header("Content-Type", "text/html; charset=utf-8")
    handler.set_header("Content-Security-Policy", content_security_policy(html))
    handler.set_header("X-Content-Type-Options", "nosniff")
    handler.set_header("Referrer-Policy", "same-origin")
    handler.finish(html)


def finish_error_page(handler: web.RequestHandler, status: int, message: str, title: str) -> None:
    """An error in the page's own look: the message for the user, never a traceback."""
    finish_page(handler, "service_error.html", title=title, status=status, message=message)
