"""helm-values/grafana-dashboard.json without a cluster: one Prometheus data source chosen by the
variable, unique panel ids, every query valid PromQL (promtool checks them as recording rules).
tests/monitoring/test_metrics.py runs every query against the real Prometheus."""

from __future__ import annotations

import json

import yaml

from tests.monitoring import dashboard
from tests.monitoring.test_rules import promtool


def test_every_panel_queries_the_chosen_prometheus():
    document = json.loads(dashboard.DASHBOARD.read_text())
    variable = {"type": "prometheus", "uid": "${datasource}"}
    assert [v["name"] for v in document["templating"]["list"]] == ["datasource"]
    ids = [p["id"] for p in document["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard.panels():
        assert panel["datasource"] == variable, panel["title"]
        assert panel["targets"] and all(t["datasource"] == variable for t in panel["targets"])
    assert len(dashboard.queries()) >= 15


def test_every_query_is_valid_promql(tmp_path):
    rules = [
        {"record": f"dashboard:query_{index}:check", "expr": expr}
        for index, (_, expr) in enumerate(dashboard.queries())
    ]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout
