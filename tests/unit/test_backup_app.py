"""The backup service's settings, request bodies and OpenAPI document."""

from datetime import timedelta

import pytest
from kubernetes_asyncio import client
from traitlets import TraitError
from traitlets.config import Config

from aiinfn_hub.errors import UserError
from aiinfn_hub.services.backup import borg, image, openapi
from aiinfn_hub.services.backup.app import AiInfnBackup
from aiinfn_hub.services.backup.handlers import routes
from aiinfn_hub.services.backup.request import BackupRequest, RestoreRequest, parse
from aiinfn_hub.services.backup.schedule import Policy


def app(**sections) -> AiInfnBackup:
    return AiInfnBackup(config=Config(sections))


async def test_defaults_come_from_the_platform_settings():
    backup = app(KubeSpawner={"namespace": "jhub"}, AiInfnStorage={"home_claim": "homes"})
    assert backup.namespace == "jhub"
    async with client.ApiClient() as api_client:
        service, scheduler = backup.service(api_client)
    settings = service.config.settings
    assert settings.image == image.IMAGE
    assert (settings.target_claim, settings.keys_secret, settings.backup_uid) == (
        "aiinfn-backup",
        "aiinfn-backup-keys",
        990,
    )
    assert service.config.storage.home_claim == "homes"
    assert set(service.config.catalog.projects) == {"cms-ml", "lhcb-flashsim", "qml"}
    assert service.store.namespace == "jhub"
    assert settings.borg.retention == borg.Retention(7, 4, 6)
    # Nightly at 02:00 UTC by default, the first at the next 02:00 after the start.
    assert backup.schedule == "02:00"
    assert scheduler.config.scheduled
    assert scheduler.config.policy == Policy("02:00", 2, 2, timedelta(hours=1), 7, False)
    assert scheduler.config.records_configmap == "aiinfn-backup-records"
    assert scheduler.store is service.store


async def test_the_schedule_limits_and_retention_are_settings():
    backup = app(
        AiInfnBackup={
            "schedule": "23:15",
            "max_concurrent_backups": 1,
            "backup_retries": 0,
            "backup_retry_delay": 0.0,
            "check_every_days": 0,
            "catch_up": True,
            "keep_daily": 3,
            "keep_weekly": 0,
            "keep_monthly": 12,
            "excludes": ["sh:**/.cache", "pp:data/raw", "re:\\.tmp$"],
        }
    )
    async with client.ApiClient() as api_client:
        service, scheduler = backup.service(api_client)
    assert scheduler.config.policy == Policy("23:15", 1, 0, timedelta(0), 0, True)
    assert service.config.settings.borg.retention == borg.Retention(3, 0, 12)
    assert service.config.settings.borg.excludes == ("sh:**/.cache", "pp:data/raw", "re:\\.tmp$")
    assert scheduler.config.scheduled
    async with client.ApiClient() as api_client:
        _, unscheduled = app(AiInfnBackup={"schedule": ""}).service(api_client)
    assert not unscheduled.config.scheduled


async def test_a_retention_that_keeps_nothing_stops_the_start():
    backup = app(AiInfnBackup={"keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0})
    async with client.ApiClient() as api_client:
        with pytest.raises(TraitError, match="keep_daily/weekly/monthly"):
            backup.service(api_client)


@pytest.mark.parametrize(
    "sections, message",
    [
        ({"AiInfnBackup": {"namespace": "Bad_Namespace"}}, "AiInfnBackup.namespace"),
        ({"AiInfnBackup": {"target_claim": "a/b"}}, "AiInfnBackup.target_claim"),
        ({"AiInfnBackup": {"keys_secret": ""}}, "AiInfnBackup.keys_secret"),
        ({"AiInfnBackup": {"image": "Bad Image"}}, "AiInfnBackup.image"),
        ({"AiInfnBackup": {"backup_uid": 0}}, "backup_uid"),
        ({"AiInfnBackup": {"list_timeout": 1.0}}, "list_timeout"),
        ({"AiInfnBackup": {"schedule": "2am"}}, "AiInfnBackup.schedule"),
        ({"AiInfnBackup": {"schedule": "24:00"}}, "AiInfnBackup.schedule"),
        ({"AiInfnBackup": {"max_concurrent_backups": 0}}, "max_concurrent_backups"),
        ({"AiInfnBackup": {"records_configmap": "A B"}}, "AiInfnBackup.records_configmap"),
        ({"AiInfnBackup": {"excludes": ["**/.cache"]}}, "excludes: '\\*\\*/.cache' must start"),
        ({"AiInfnBackup": {"excludes": ["re:("]}}, "is not a regular expression"),
        ({"AiInfnBackup": {"excludes": ["sh:"]}}, "is empty after its style"),
        ({"AiInfnBackup": {"excludes": ["sh:a\nb"]}}, "control character"),
        ({"AiInfnBackup": {"excludes": ["sh:" + "a" * 300]}}, "longer than 256"),
        ({"AiInfnBackup": {"excludes": ["sh:a"] * 65}}, "excludes"),
    ],
)
def test_bad_settings_name_their_key(sections, message):
    with pytest.raises(TraitError, match=message):
        backup = app(**sections)
        backup.namespace, backup.backup_uid, backup.list_timeout  # noqa: B018 (validates)
        backup.schedule, backup.max_concurrent_backups, backup.records_configmap  # noqa: B018
        backup.excludes  # noqa: B018


def test_bodies_are_strict_and_name_fields_not_values():
    asked = parse(RestoreRequest, b'{"kind": "home", "name": "alice", "archive": "a1"}')
    assert (asked.path, asked.folder) == ("", None)
    for body, words in [
        (b'{"kind": "home", "name": "alice", "secret-value": 1}', "secret-value"),
        (b'{"kind": "dataset", "name": "alice"}', "kind"),
        (b'{"kind": "home"}', "name"),
        (b"not json", "invalid request"),
    ]:
        with pytest.raises(UserError) as refused:
            parse(BackupRequest, body)
        assert refused.value.status == 400 and words in refused.value.message
        assert "dataset" not in refused.value.message
    with pytest.raises(UserError) as large:
        parse(BackupRequest, b" " * 20_000)
    assert large.value.status == 413


def test_the_openapi_document_describes_every_api_route():
    document = openapi.document()
    assert set(document["paths"]) == {
        "/api/repositories/{kind}/{name}/archives",
        "/api/repositories/{kind}/{name}/archives/{archive}/paths",
        "/api/restores",
        "/api/backups",
        "/api/runs/{run_id}",
        "/api/records",
    }
    schemas = document["components"]["schemas"]
    assert schemas["RestoreRequest"]["additionalProperties"] is False
    assert set(schemas["RestoreRequest"]["required"]) == {"kind", "name", "archive"}
    served = {pattern for pattern, _ in routes()}
    api = {pattern for pattern in served if pattern.startswith("api/")}
    assert len(api) == 8  # the six above, api/ and the document
    assert {"metrics", "health"} <= served  # the rest are the page's (test_backup_page.py)
