"""The usage service's pure parts: the query's checks and who may see what, the CSV (quoting,
formula injection), the chart's geometry, the OpenAPI document, and 56-usage.py's
registration."""

from __future__ import annotations

import csv
import io
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from traitlets.config import Config

from aiinfn_hub.services.base import HubUser
from aiinfn_hub.services.usage import chart, openapi, query, report
from aiinfn_hub.services.usage.handlers import routes
from aiinfn_hub.services.usage.store import DailyUse

TODAY = date(2026, 12, 5)
ALICE = HubUser("alice", frozenset({"cms-ml"}), False)
ADA = HubUser("ada", frozenset(), True)
AUDITOR = HubUser("carol", frozenset({"accounting"}), False)
CONFIG_D = Path(__file__).resolve().parents[2] / "jupyterhub_config.d"


def parse(**arguments: str) -> query.UsageQuery:
    encoded = {name: [value.encode()] for name, value in arguments.items()}
    return query.parse(encoded, TODAY, 366)


def refusal(arguments: dict[str, list[bytes]]) -> str:
    with pytest.raises(query.Invalid) as raised:
        query.parse(arguments, TODAY, 366)
    assert raised.value.status == 400
    return raised.value.message


def test_the_default_range_is_the_last_30_days_to_today():
    asked = parse()
    assert (asked.first, asked.last, asked.format) == (date(2026, 11, 6), TODAY, "json")
    assert len(asked.days()) == 30
    assert asked.since == datetime(2026, 11, 6, tzinfo=UTC)
    assert asked.until == datetime(2026, 12, 6, tzinfo=UTC)


def test_a_range_of_366_days_is_taken_and_367_refused():
    assert len(parse(start="2025-12-05", end="2026-12-05").days()) == 366
    message = refusal({"start": [b"2025-12-04"], "end": [b"2026-12-05"]})
    assert message == "a range of at most 366 days, please (start to end, both included)"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"start": [b"2026-13-01"]}, "'start' must be a date, YYYY-MM-DD (UTC)"),
        ({"end": [b"20261201"]}, "'end' must be a date, YYYY-MM-DD (UTC)"),
        ({"end": [b"9999-12-31"]}, "'end' must be between 2000-01-01 and 2999-12-31"),
        ({"start": [b"2026-12-04"], "end": [b"2026-12-01"]}, "'start' must not be after 'end'"),
        ({"user": [b"a", b"b"]}, "give 'user' at most once"),
        ({"user": [b"\xff"]}, "'user' is not UTF-8 text"),
        ({"user": [b"x" * 65]}, "'user' must be 1 to 64 printable ASCII characters"),
        ({"user": ["él".encode()]}, "'user' must be 1 to 64 printable ASCII characters"),
        ({"project": [b"a\nb"]}, "'project' must be 1 to 63 printable ASCII characters"),
        ({"all": [b"maybe"]}, "'all' must be 1 or 0"),
        ({"all": [b"1"], "user": [b"bob"]}, "give either 'user' or 'all', not both"),
        ({"format": [b"xml"]}, "'format' must be json or csv"),
    ],
)
def test_every_parameter_is_checked(arguments, message):
    assert refusal(arguments) == message


def test_an_unknown_parameter_is_named():
    message = refusal({"user": [b"alice"], "limit": [b"5"], "x" * 100: [b""]})
    assert message.startswith("unknown parameter 'limit', '" + "x" * 32 + "'; the parameters are")


def test_users_see_their_own_usage_and_admins_everyones():
    own = query.authorise(parse(), ALICE, admin=False)
    assert (own.user, own.every_user) == ("alice", False)
    assert query.authorise(parse(user="alice"), ALICE, admin=False).user == "alice"
    for asked in (parse(user="bob"), parse(all="1")):
        with pytest.raises(query.Forbidden) as raised:
            query.authorise(asked, ALICE, admin=False)
        assert raised.value.status == 403
        assert raised.value.message == "you may see your own usage only; admins see everyone's"
    assert query.authorise(parse(user="bob"), ADA, admin=True).user == "bob"
    everyone = query.authorise(parse(all="1", project="cms-ml"), ADA, admin=True)
    assert (everyone.user, everyone.every_user, everyone.project) == (None, True, "cms-ml")


def test_admins_are_the_hubs_and_the_configured_groups():
    assert query.is_admin(ADA, [])
    assert query.is_admin(AUDITOR, ["accounting"])
    assert not query.is_admin(ALICE, ["accounting"])


def row(day: int, user: str, project: str = "", model: str = "t4", **figures: int) -> DailyUse:
    return DailyUse(
        date(2026, 12, day),
        user,
        project,
        model,
        "notebook",
        "",
        figures.get("units", 3600),
        figures.get("cpu", 1_800_000),
    )


def test_csv_quotes_cells_and_defuses_formulas():
    rows = [
        row(1, '=HYPERLINK("http://x","a,b")', project="+evil"),
        row(2, "-1+1", project="@SUM(A1)"),
        row(2, "\tbob", model=""),
        row(3, "plain"),
    ]
    text = report.csv_text(rows)
    assert text.startswith(
        "day,user,project,model,kind,site,accelerator_seconds,accelerator_hours,"
        "cpu_millicore_seconds,cpu_hours\r\n"
    )
    assert '2026-12-01,"\'=HYPERLINK(""http://x"",""a,b"")",\'+evil,t4,notebook,,3600,1.0,' in text
    parsed = list(csv.reader(io.StringIO(text)))
    assert [line[1:3] for line in parsed[1:]] == [
        ['\'=HYPERLINK("http://x","a,b")', "'+evil"],
        ["'-1+1", "'@SUM(A1)"],
        ["'\tbob", ""],
        ["plain", ""],
    ]
    assert parsed[1][6:] == ["3600", "1.0", "1800000", "0.5"]


def test_the_csv_file_name_needs_no_quoting():
    asked = parse(start="2026-12-01", end="2026-12-03")
    assert report.csv_filename(query.authorise(asked, ALICE, False)) == (
        "usage-alice-2026-12-01-2026-12-03.csv"
    )
    odd = query.authorise(parse(user='a"b;c', end="2026-12-03"), ADA, True)
    assert report.csv_filename(odd).startswith("usage-user-")
    everyone = query.authorise(parse(all="1", end="2026-12-03"), ADA, True)
    assert report.csv_filename(everyone).startswith("usage-all-")


def test_totals_sum_the_days_exactly():
    rows = [row(1, "alice", units=7), row(2, "alice", units=11, cpu=5), row(2, "bob", units=1)]
    assert report.totals(rows) == [
        {
            "user": "alice",
            "project": "",
            "model": "t4",
            "kind": "notebook",
            "site": "",
            "accelerator_seconds": 18,
            "accelerator_hours": 0.005,
            "cpu_millicore_seconds": 1_800_005,
            "cpu_hours": 0.500001,
        },
        {
            "user": "bob",
            "project": "",
            "model": "t4",
            "kind": "notebook",
            "site": "",
            "accelerator_seconds": 1,
            "accelerator_hours": 0.000278,
            "cpu_millicore_seconds": 1_800_000,
            "cpu_hours": 0.5,
        },
    ]


def test_the_chart_stacks_models_per_day_within_the_plot():
    days = [date(2026, 12, d) for d in (1, 2, 3)]
    rows = [
        row(1, "alice", model="a100", units=2 * 3600),
        row(1, "alice", model="t4", units=3 * 3600),
        row(3, "alice", model="t4", units=3600),
        row(2, "alice", model="", units=0),  # CPU only: no accelerator bar
    ]
    drawn = chart.accelerator_chart(days, rows)
    assert [(bar.label, bar.fill) for bar in drawn.bars] == [
        ("2026-12-01, a100: 2.00 h", chart.PALETTE[0]),
        ("2026-12-01, t4: 3.00 h", chart.PALETTE[1]),
        ("2026-12-03, t4: 1.00 h", chart.PALETTE[1]),
    ]
    plot_height = chart.HEIGHT - chart.TOP - chart.BOTTOM
    a100, t4, last = drawn.bars
    # 5 hours on the first day: the axis goes to 5; a100 sits on the baseline, t4 on it.
    assert a100.y + a100.height == pytest.approx(drawn.baseline)
    assert a100.height == pytest.approx(plot_height * 2 / 5)
    assert t4.y + t4.height == pytest.approx(a100.y)
    assert t4.y == pytest.approx(chart.TOP)
    assert last.height == pytest.approx(plot_height / 5)
    assert [tick.text for tick in drawn.y_ticks] == ["0", "1", "2", "3", "4", "5"]
    assert [tick.text for tick in drawn.x_ticks] == ["12-01", "12-02", "12-03"]
    assert drawn.legend == [("a100", chart.PALETTE[0], 2.0), ("t4", chart.PALETTE[1], 4.0)]
    assert drawn.summary == (
        "Accelerator hours per day, by model: 6.0 h over 3 days, by a100 2.0, t4 4.0"
    )


def test_a_long_range_labels_at_most_ten_days():
    days = [date(2026, 1, 1) + (date(2026, 1, 2) - date(2026, 1, 1)) * n for n in range(366)]
    drawn = chart.cpu_chart(days, [])
    assert len(drawn.x_ticks) <= chart.MAX_X_LABELS and drawn.bars == []
    assert drawn.summary == "CPU core-hours per day, by kind: 0 core-h over 366 days"


def test_the_openapi_document_names_every_parameter_and_the_limit():
    document = openapi.document(366)
    assert document["openapi"] == "3.1.0"
    names = [p["name"] for p in document["paths"]["/api/usage"]["get"]["parameters"]]
    assert names == ["start", "end", "user", "all", "project", "format"]
    assert set(names) == set(query.PARAMETERS)
    assert (
        "At most 366 days" in document["paths"]["/api/usage"]["get"]["parameters"][1]["description"]
    )
    assert "text/csv" in document["paths"]["/api/usage.csv"]["get"]["responses"]["200"]["content"]
    assert set(document["paths"]) == {"/api/", "/api/usage", "/api/usage.csv"}
    served = {pattern for pattern, _ in routes()}
    assert len(served) == 6  # the three above, the document, the page and health


def load_56(config: Config) -> Config:
    path = CONFIG_D / "56-usage.py"
    exec(compile(path.read_text(), path.name, "exec"), {"c": config})  # as z2jh does
    return config


def test_56_usage_registers_the_service_only_with_accounting(monkeypatch):
    url = "postgresql://acct:secret@db.example:5432/acct"
    monkeypatch.delenv("AIINFN_ACCOUNTING_DATABASE_URL", raising=False)
    chart_entry = [{"name": "usage", "url": "http://hub:10103"}, {"name": "jobs"}]
    assert load_56(Config({"JupyterHub": {"services": list(chart_entry)}})).JupyterHub.services == [
        {"name": "jobs"}
    ]
    monkeypatch.setenv("AIINFN_ACCOUNTING_DATABASE_URL", url)
    monkeypatch.setenv("OAUTH_CLIENT_SECRET", "never passed on")
    services = load_56(Config({"JupyterHub": {"services": list(chart_entry)}})).JupyterHub.services
    usage = services[0]
    assert usage["url"] == "http://hub:10103"  # the chart's address wins
    assert usage["command"] == [sys.executable, "-m", "aiinfn_hub.services.usage"]
    assert usage["environment"]["AIINFN_ACCOUNTING_DATABASE_URL"] == url
    assert "OAUTH_CLIENT_SECRET" not in usage["environment"]
    assert (usage["oauth_no_confirm"], usage["oauth_client_allowed_scopes"]) == (True, [])
    assert "api_token" not in usage and "oauth_roles" not in usage  # no hub scopes of its own
    alone = load_56(Config()).JupyterHub.services.to_dict()["extend"]
    assert alone[0]["url"] == "http://127.0.0.1:10103"
