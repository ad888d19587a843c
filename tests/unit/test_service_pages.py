"""The service pages' frame: the hub's page.html around a service's content, the Services menu,
and a Content-Security-Policy that lets only the hub base page's own inline scripts run."""

import base64
import hashlib
import re
from types import SimpleNamespace

from jupyterhub.services.auth import HubOAuth
from traitlets.config import Config

from aiinfn_hub.services import pages
from aiinfn_hub.services.base import HubUser


def handler(user: HubUser | None) -> SimpleNamespace:
    return SimpleNamespace(
        settings={
            "hub_auth": HubOAuth(hub_prefix="/ai/hub/", api_token="unused"),
            "page_links": [pages.ServiceLink("jobs", "/ai/services/jobs/")],
            "service_prefix": "/ai/services/jobs/",
        },
        hub_user=user,
        xsrf_token=b"xsrf-123",
    )


def test_a_page_has_the_hubs_navigation_bar_theme_and_the_users_name():
    html = pages.render_page(
        handler(HubUser("alice<b>", frozenset(), admin=False)),
        "service_error.html",
        title="Jobs",
        message="no <such> job",
    )
    assert '<nav class="navbar' in html and 'id="dark-theme-toggle"' in html
    assert 'href="/ai/hub/static/css/style.min.css"' in html
    assert 'src="/ai/hub/static/js/darkmode.js"' in html
    assert '<a class="dropdown-item" href="/ai/services/jobs/">jobs</a>' in html
    assert "alice&lt;b&gt;" in html and "alice<b>" not in html
    assert 'user: "alice\\u003cb\\u003e"' in html
    assert "no &lt;such&gt; job" in html
    assert 'href="/ai/hub/logout"' in html and 'href="/ai/hub/admin"' not in html
    assert "<title>Jobs · JupyterHub</title>" in html


def test_an_admin_gets_the_admin_link_and_nobody_gets_a_spawner_check():
    html = pages.render_page(
        handler(HubUser("root", frozenset(), admin=True)),
        "service_error.html",
        title="x",
        message="",
    )
    assert 'href="/ai/hub/admin"' in html and "admin_access: true" in html
    assert "options_form: false" in html


def test_without_a_user_the_page_offers_the_login():
    html = pages.render_page(handler(None), "service_error.html", title="x", message="")
    assert 'href="/ai/hub/login"' in html and "Logout" not in html


def test_the_policy_allows_exactly_the_pages_inline_scripts_by_hash():
    html = "<script src='/x.js'></script><script>one()</script><script type='t'>two()</script>"
    policy = pages.content_security_policy(html)
    digests = re.findall(r"'sha256-([^']+)'", policy)
    expected = [
        base64.b64encode(hashlib.sha256(body).digest()).decode() for body in (b"one()", b"two()")
    ]
    assert digests == expected
    assert "script-src 'self' 'sha256-" in policy and "unsafe-inline" not in policy
    assert "style-src 'self';" in policy and "frame-ancestors 'self'" in policy


def test_the_services_menu_lists_services_with_a_url_that_are_not_hidden():
    config = Config()
    config.JupyterHub.services.append({"name": "jobs", "url": "http://127.0.0.1:10101"})
    config.JupyterHub.services.append({"name": "hidden", "url": "http://x", "display": False})
    config.JupyterHub.services.append({"name": "culler", "command": ["cull"]})
    links = pages.service_links(config.JupyterHub.services, "/")
    assert links == [pages.ServiceLink("jobs", "/services/jobs/")]
    assert pages.service_links([{"name": "b", "url": "u"}], "/ai/") == [
        pages.ServiceLink("b", "/ai/services/b/")
    ]
    assert pages.service_links(Config().JupyterHub.get("services"), "/") == []
