"""helm-values/grafana-dashboard.json read the way Grafana reads it: every panel's queries."""

from __future__ import annotations

import json

from tests.prometheus import REPO

DASHBOARD = REPO / "helm-values" / "grafana-dashboard.json"


def panels() -> list[dict]:
    """Every panel, those inside collapsed rows included, rows themselves not."""
    found = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        if panel["type"] == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def queries() -> list[tuple[str, str]]:
    """(panel title and refId, PromQL expression) of every target of every panel."""
    return [
        (f"{panel['title']} {target['refId']}", target["expr"])
        for panel in panels()
        for target in panel["targets"]
    ]
