"""Render the spawn form from profiles (autoescaped Jinja; JupyterHub inserts the result as-is).

Most page views see the same profiles as the one before (watch events rarely change what a card
shows), so the HTML is kept for the last few distinct inputs: identical profiles give identical
HTML, and the Jinja render (most of a page view's cost) is skipped.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

CACHE_SIZE = 128
LINK_NOTICE = "These choices come from a link: check them, then press Start."

_environment = Environment(
    loader=PackageLoader("aiinfn_hub", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
)
_rendered: OrderedDict[str, str] = OrderedDict()


def render(profiles: list[dict[str, Any]], notice: str = "") -> str:
    """The form's HTML; `notice`, if any, is a line shown above the cards."""
    key = json.dumps([profiles, notice], sort_keys=True)
    html = _rendered.get(key)
    if html is None:
        html = _environment.get_template("spawn_form.html").render(profiles=profiles, notice=notice)
        _rendered[key] = html
        if len(_rendered) > CACHE_SIZE:
            _rendered.popitem(last=False)
    else:
        _rendered.move_to_end(key)
    return html
