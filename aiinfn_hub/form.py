"""Render the spawn form from profiles (autoescaped Jinja; JupyterHub inserts the result as-is)."""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

_environment = Environment(
    loader=PackageLoader("aiinfn_hub", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
)


def render(profiles: list[dict[str, Any]]) -> str:
    return _environment.get_template("spawn_form.html").render(profiles=profiles)
