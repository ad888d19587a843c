"""The backup page's pure parts and its templates, rendered in the hub's frame: breadcrumbs,
sizes, links that carry the repository, restore forms with the XSRF token (a folder field for
admins only), and a run's state."""

from types import SimpleNamespace

from jupyterhub.services.auth import HubOAuth

from aiinfn_hub.services import pages
from aiinfn_hub.services.backup import page
from aiinfn_hub.services.base import HubUser

PREFIX = "/services/backup/"


def render(template: str, user: HubUser, **context) -> str:
    handler = SimpleNamespace(
        settings={
            "hub_auth": HubOAuth(hub_prefix="/hub/", api_token="unused"),
            "page_links": [],
            "service_prefix": PREFIX,
        },
        hub_user=user,
        xsrf_token=b"xsrf-123",
    )
    return pages.render_page(
        handler, template, title="Backups", size=page.human_size, when=page.when, **context
    )


ALICE = HubUser("alice", frozenset({"cms-ml"}), admin=False)
ADA = HubUser("ada", frozenset(), admin=True)


def test_breadcrumbs_go_from_the_archive_down_to_the_folder():
    assert page.breadcrumbs("a1", "") == [page.Crumb("a1", "")]
    assert page.breadcrumbs("a1", "work/deep") == [
        page.Crumb("a1", ""),
        page.Crumb("work", "work"),
        page.Crumb("deep", "work/deep"),
    ]


def test_sizes_and_times_read_plainly():
    assert [page.human_size(n) for n in (0, 1023, 1536, 3 * 1024**3)] == [
        "0 B",
        "1023 B",
        "1.5 KiB",
        "3.0 GiB",
    ]
    assert page.human_size(None) == page.human_size(True) == page.human_size(-1) == ""
    assert page.when("2026-12-05T02:00:00.123+00:00") == "2026-12-05 02:00:00"
    assert page.when(None) == ""


def test_the_overview_links_each_repository_and_shows_records_to_admins_only():
    html = render("backup.html", ALICE, repositories=[("home", "alice")], records=[], projects=[])
    assert f'href="{PREFIX}?kind=home&amp;name=alice"' in html and "Your home" in html
    assert 'id="records"' not in html and 'id="open-repository"' not in html
    record = {
        "key": "home-alice",
        "kind": "home",
        "name": "alice",
        "last_success": "2026-12-05T02:00:05+00:00",
        "last_failure": None,
        "last_error": "",
        "last_warning": "",
        "archives": 3,
        "last_archive_size": 2048,
        "last_archive_added": 100,
        "original_size": 6144,
        "stored_size": 1024,
        "dedup_ratio": 6.0,
        "last_check": None,
        "last_check_ok": None,
    }
    html = render("backup.html", ADA, repositories=[], records=[record], projects=["qml"])
    assert 'id="open-repository"' in html and '<option value="qml">' in html
    assert "2026-12-05 02:00:05" in html and "6.0 KiB" in html and ">6.0<" in html


def test_a_folder_has_breadcrumbs_links_and_restore_forms_with_the_xsrf_token():
    context = {
        "kind": "home",
        "name": "alice",
        "archive": "2026-12-05T020000Z",
        "folder": "work",
        "crumbs": page.breadcrumbs("2026-12-05T020000Z", "work"),
        "entry_name": page.entry_name,
        "entries": [
            {"path": "work/<b>.txt", "type": "file", "size": 2048, "mtime": "2026-12-04T10:00:00"},
            {"path": "work/deep", "type": "folder", "size": 0, "mtime": "2026-12-04T10:00:00"},
        ],
    }
    html = render("backup_folder.html", ALICE, **context)
    assert "&lt;b&gt;.txt" in html and "<b>.txt" not in html
    deep = "kind=home&amp;name=alice&amp;archive=2026-12-05T020000Z&amp;folder=work%2Fdeep"
    assert f'href="{PREFIX}?{deep}"' in html
    top = "kind=home&amp;name=alice&amp;archive=2026-12-05T020000Z&amp;folder="
    assert f'href="{PREFIX}?{top}"' in html
    assert html.count(f'action="{PREFIX}restore"') == 3
    assert html.count('name="_xsrf" value="xsrf-123"') == 3
    assert 'name="path" value="work/&lt;b&gt;.txt"' in html
    assert 'name="folder"' not in html and "~/restored/2026-12-05T020000Z/" in html
    assert 'name="folder"' in render("backup_folder.html", ADA, **context)


def test_a_runs_page_says_where_a_restore_went_or_why_it_was_refused():
    run = {
        "id": "restore-home-0123456789ab-x",
        "kind": "restore",
        "archive": "a1",
        "state": "succeeded",
        "destination": "/home/jovyan/restored/a1/x.txt",
    }
    html = render("backup_run.html", ALICE, run=run, refresh_seconds=0)
    assert 'data-state="succeeded"' in html and "/home/jovyan/restored/a1/x.txt</code>" in html
    refused = {**run, "state": "refused", "status": 409, "message": "x already exists"}
    html = render("backup_run.html", ALICE, run=refused, refresh_seconds=0)
    assert 'id="message">x already exists<' in html


def test_archives_show_their_sizes_when_the_listing_gives_them():
    archives = [
        {
            "name": "a2",
            "time": "2026-12-05T02:00:00",
            "files": 7,
            "original_size": 3072,
            "compressed_size": 2048,
            "deduplicated_size": 1024,
        },
        {"name": "a1", "time": "2026-12-04T02:00:00"},
    ]
    html = render("backup_archives.html", ALICE, kind="home", name="alice", archives=archives)
    row = html.split('data-archive="a2"', 1)[1].split("</tr>", 1)[0]
    assert "<td>7</td>" in row and "3.0 KiB" in row and "1.0 KiB" in row
    assert "2026-12-05 02:00:00" in row and "?kind=home&amp;name=alice&amp;archive=a2" in row
    assert 'id="backup-now"' in html and 'name="_xsrf" value="xsrf-123"' in html
