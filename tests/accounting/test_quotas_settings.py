"""c.AiInfnAccounting.quotas: checked at start naming the quota and field (the catalog's models
and projects too), refused without a database, none by default (and then no gate at all); the
spawn form's quota lines."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from traitlets import TraitError
from traitlets.config import Config

from aiinfn_hub import form
from aiinfn_hub.accounting import quota_gate
from aiinfn_hub.accounting.quotas import QuotaStanding, form_notes
from aiinfn_hub.accounting.settings import URL_ENV, AiInfnAccounting, service_environment

SECRET = "s3cr%40t"
URL = f"postgresql://acct:{SECRET}@db.example:5432/accounting"
WEEKLY = {"scope": "user", "period": "week", "hours": 50}


def settings(monkeypatch, **values) -> AiInfnAccounting:
    monkeypatch.delenv(URL_ENV, raising=False)
    return AiInfnAccounting(config=Config({"AiInfnAccounting": values}))


def test_no_quotas_by_default_and_then_no_gate(monkeypatch):
    assert settings(monkeypatch).quotas == {}
    config = Config({"AiInfnAccounting": {"database_url": URL}})
    assert quota_gate.shared_gate(config, {}, None) is None


def test_quotas_with_a_database(monkeypatch):
    got = settings(monkeypatch, database_url=URL, quotas={"weekly": WEEKLY})
    assert got.quotas == {"weekly": WEEKLY}
    monkeypatch.setenv(URL_ENV, URL)  # the database from the environment counts too
    assert AiInfnAccounting(config=Config({"AiInfnAccounting": {"quotas": {"w": WEEKLY}}}))


def test_quotas_without_a_database_stop_the_start(monkeypatch):
    with pytest.raises(TraitError, match="AiInfnAccounting.quotas need accounting: set "):
        settings(monkeypatch, quotas={"weekly": WEEKLY})


@pytest.mark.parametrize(
    "quota, message",
    [
        ({**WEEKLY, "period": "year"}, "quota 'q': period must be one of day, week, month"),
        ({**WEEKLY, "model": "v100"}, "quota 'q': model must be an accelerator of the catalog"),
        ({**WEEKLY, "model": "cpu"}, "quota 'q': model must be an accelerator of the catalog"),
        ({**WEEKLY, "scope": "project", "subject": "nope"}, "no project 'nope' in the catalog"),
    ],
)
def test_a_bad_quota_is_refused_naming_it(monkeypatch, quota, message):
    with pytest.raises(TraitError) as refused:
        settings(monkeypatch, database_url=URL, quotas={"q": quota})
    assert str(refused.value).startswith("AiInfnAccounting.quotas: ")
    assert message in str(refused.value)
    assert SECRET not in str(refused.value)


def test_catalog_models_and_projects_are_accepted(monkeypatch):
    quota = {"scope": "project", "subject": "cms-ml", "model": "a100", "period": "day", "hours": 1}
    assert settings(monkeypatch, database_url=URL, quotas={"q": quota}).quotas


def test_the_gate_is_built_once_per_configuration(monkeypatch):
    monkeypatch.delenv(URL_ENV, raising=False)
    config = Config({"AiInfnAccounting": {"database_url": URL, "quotas": {"w": WEEKLY}}})
    gate = quota_gate.shared_gate(config, {"a100": "NVIDIA A100"}, None)
    assert gate is not None and [q.name for q in gate.quotas] == ["w"]
    assert quota_gate.shared_gate(config, {}, None) is gate
    assert SECRET not in repr(vars(gate).get("quotas")) and gate.timeout == 3.0


def test_the_form_shows_what_is_left_and_what_is_used_up():
    week = datetime(2026, 12, 14, tzinfo=UTC), datetime(2026, 12, 21, tzinfo=UTC)
    left = QuotaStanding("user", "alice", None, "week", *week, 50.0, 37.46)
    used = QuotaStanding("user", "alice", "a100", "week", *week, 10.0, 10.0)
    notes = form_notes([left, used], {"a100": "NVIDIA A100"}, "alice")
    assert notes == [
        {
            "text": "Quota: 12.5 of 50 GPU-hours left this week (resets 2026-12-21 00:00 UTC)",
            "exhausted": False,
            "remaining": 12.5,
        },
        {
            "text": "Quota used up: you have used 10.0 of your 10 hours of NVIDIA A100 this week "
            "(resets 2026-12-21 00:00 UTC)",
            "exhausted": True,
            "remaining": 0.0,
        },
    ]
    profile = {
        "slug": "a100",
        "display_name": "A100",
        "default": True,
        "description": "",
        "profile_options": {"environment": {"display_name": "Env", "choices": {},
                                            "unlisted_choice": {"enabled": False}}},
        "aiinfn": {"kind": "gpu", "free": 1, "free_now": 1, "total": 1, "batch_jobs": 0,
                   "memory": "", "disabled_reason": None, "quotas": notes},
    }  # fmt: skip
    html = form.render([profile])
    assert '<div class="aiinfn-quota" data-remaining-hours="12.5">Quota: 12.5 of 50' in html
    assert '<div class="aiinfn-quota none" data-remaining-hours="0.0">Quota used up: ' in html
    del profile["aiinfn"]["quotas"]  # no quotas: no line
    assert "aiinfn-quota" not in form.render([profile]).split("</style>")[1]


def test_the_job_service_gets_the_ledgers_url_from_the_hubs_environment(monkeypatch):
    monkeypatch.delenv(URL_ENV, raising=False)
    assert service_environment() == {}
    monkeypatch.setenv(URL_ENV, URL)
    assert service_environment() == {URL_ENV: URL}


def test_the_hub_does_not_start_with_quotas_and_no_database(monkeypatch):
    from aiinfn_hub.accounting import hub_start

    monkeypatch.delenv(URL_ENV, raising=False)
    config = Config({"AiInfnAccounting": {"quotas": {"weekly": WEEKLY}}})
    hub = SimpleNamespace(config=config, log=logging.getLogger("test"))
    with pytest.raises(SystemExit) as stopped:
        hub_start._start(hub)
    assert str(stopped.value).startswith(
        "aiinfn-hub: invalid accounting configuration: AiInfnAccounting.quotas need accounting"
    )
