"""The access layer's pure parts (watch lines, errors, backoff) and the list-then-watch loop
driven by a scripted lister: pages, resume from the last resourceVersion, relist on 410."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiinfn_hub import k8s
from aiinfn_hub.k8s_watch import ListWatch, parse_event, resource_version

# ---- watch lines and errors -------------------------------------------------------------------


def test_parse_event():
    assert parse_event(b'{"type": "ADDED", "object": {"metadata": {"name": "p"}}}\n') == (
        "ADDED",
        {"metadata": {"name": "p"}},
    )
    assert (
        parse_event('{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"12"}}}')[0]
        == "BOOKMARK"
    )
    gone = (
        b'{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired",'
        b'"message":"too old resource version: 1 (5)"}}'
    )
    with pytest.raises(k8s.ResourceExpired, match="too old"):
        parse_event(gone)
    with pytest.raises(k8s.ApiError, match="500: boom") as refused:
        parse_event(b'{"type":"ERROR","object":{"code":500,"message":"boom"}}')
    assert refused.type is k8s.ApiError and refused.value.status == 500
    with pytest.raises(k8s.ApiError, match="malformed"):
        parse_event(b'{"kind":"Status","code":500}')
    with pytest.raises(ValueError):
        parse_event(b'{"type": "ADDED", "obj')


def test_resource_version():
    assert resource_version({"metadata": {"resourceVersion": "7"}}) == "7"
    assert resource_version({"metadata": {"resourceVersion": ""}}) is None
    assert resource_version({"metadata": None}) is None
    assert resource_version({}) is None


def test_errors_are_api_exceptions_with_the_servers_message():
    error = k8s.api_error(404, 'pods "x" not found', "Not Found")
    assert isinstance(error, k8s.ApiException) and type(error) is k8s.ApiError
    assert (error.status, error.reason, error.message) == (404, "Not Found", 'pods "x" not found')
    assert json.loads(error.body) == {"message": 'pods "x" not found'}
    assert type(k8s.api_error(410, "gone")) is k8s.ResourceExpired
    assert len(k8s.api_error(500, "x" * 1000).message) == 300


def test_status_message():
    assert k8s.status_message(b'{"kind":"Status","message":"forbidden: no"}') == "forbidden: no"
    assert k8s.status_message("<html>bad gateway</html>\n") == "<html>bad gateway</html>"
    assert k8s.status_message(b"", "Service Unavailable") == "Service Unavailable"
    assert k8s.status_message(b"[1, 2]") == "[1, 2]"


# ---- backoff ----------------------------------------------------------------------------------


def test_backoff_is_exponential_capped_and_jittered():
    assert [k8s.backoff_delay(n, rand=lambda: 1.0) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert k8s.backoff_delay(1, rand=lambda: 0.0) == 0.25
    assert k8s.backoff_delay(10_000, rand=lambda: 1.0) == 30.0
    assert k8s.backoff_delay(10_000, rand=lambda: 0.0) == 15.0


@given(
    attempt=st.integers(-5, 10**6),
    base=st.floats(0.001, 10),
    cap=st.floats(0.001, 600),
    jitter=st.floats(0, 1),
)
def test_backoff_stays_within_half_and_all_of_its_ceiling(attempt, base, cap, jitter):
    ceiling = min(cap, base * 2 ** min(max(attempt, 1) - 1, 32))
    delay = k8s.backoff_delay(attempt, base, cap, rand=lambda: jitter)
    assert ceiling / 2 <= delay <= ceiling <= cap


# ---- raw calls --------------------------------------------------------------------------------


class FakeResponse:
    """What a `_preload_content=False` call returns: a status, a body or a stream of lines."""

    def __init__(self, status: int = 200, body: Any = None, lines=(), fail=None, reason="OK"):
        self.status, self.reason = status, reason
        self.body = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.lines, self.fail = list(lines), fail
        self.closed = False

    async def read(self) -> bytes:
        return self.body

    def release(self) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True

    @property
    async def content(self):
        for line in self.lines:
            yield (json.dumps(line) + "\n").encode() if isinstance(line, dict) else line
        if self.fail is not None:
            raise self.fail


async def _answer(response: FakeResponse) -> FakeResponse:
    return response


def test_call_json_and_text():
    ok = FakeResponse(201, {"kind": "Job"})
    assert asyncio.run(k8s.call_json(_answer(ok))) == {"kind": "Job"} and ok.closed
    assert asyncio.run(k8s.call_json(_answer(FakeResponse(200, b"")))) == {}
    assert asyncio.run(k8s.call_text(_answer(FakeResponse(200, b"log \xff")))) == "log \ufffd"
    refused = FakeResponse(403, {"message": "jobs is forbidden"}, reason="Forbidden")
    with pytest.raises(k8s.ApiError, match="403: jobs is forbidden") as error:
        asyncio.run(k8s.call_json(_answer(refused)))
    assert error.value.reason == "Forbidden" and refused.closed
    with pytest.raises(k8s.ResourceExpired):
        asyncio.run(k8s.call_json(_answer(FakeResponse(410, b"", reason="Gone"))))


# ---- the loop, against a scripted API server ----------------------------------------------------


def _pod(name: str, version: str) -> dict:
    return {"metadata": {"name": name, "resourceVersion": version}}


def _event(kind: str, name: str, version: str) -> dict:
    return {"type": kind, "object": _pod(name, version)}


class ScriptedServer:
    """Answers lists and watches from a script; the last watch hangs until cancelled."""

    def __init__(self, lists: list[FakeResponse], watches: list[FakeResponse]) -> None:
        self.lists, self.watches = lists, watches
        self.calls: list[dict] = []
        self.done = asyncio.Event()

    async def __call__(self, **kwargs: Any) -> FakeResponse:
        self.calls.append(kwargs)
        if not kwargs.get("watch"):
            return self.lists.pop(0)
        if not self.watches:
            self.done.set()
            await asyncio.Event().wait()
        return self.watches.pop(0)


def _script() -> ScriptedServer:
    page = {"metadata": {"continue": "next"}, "items": [_pod("a", "3")]}
    last = {"metadata": {"resourceVersion": "10"}, "items": [_pod("b", "5")]}
    relist = {"metadata": {"resourceVersion": "20"}, "items": [_pod("c", "19")]}
    return ScriptedServer(
        lists=[FakeResponse(body=page), FakeResponse(body=last), FakeResponse(body=relist)],
        watches=[
            # ADDED and a bookmark, then a clean end: resume from the bookmark's version
            FakeResponse(lines=[_event("ADDED", "d", "11"), b"\n", _event("BOOKMARK", "", "12")]),
            FakeResponse(410, {"message": "too old resource version"}, reason="Gone"),
            # after the relist: one change, then the connection breaks
            FakeResponse(
                lines=[_event("MODIFIED", "c", "21")], fail=aiohttp.ClientPayloadError("cut")
            ),
        ],
    )


async def _follow(server: ScriptedServer) -> tuple[ListWatch, list]:
    seen: list = []

    async def on_event(kind: str, obj: dict) -> None:
        seen.append((kind, obj["metadata"]["name"]))

    watch = ListWatch(
        "test pods",
        server,
        lambda kept, version: seen.append(("relist", kept, version)),
        on_event,
        label_selector="app=x",
        keep=lambda page: [p["metadata"]["name"] for p in page],
        page_size=1,
        backoff_base=0.001,
        backoff_cap=0.002,
    )
    watch.start()
    await asyncio.wait_for(server.done.wait(), 10)
    state = (watch.resource_version, watch.stats(), watch.synced.is_set(), watch.last_event_at)
    await watch.stop()
    assert watch.resource_version is None and not watch.synced.is_set()
    return watch, [state, seen]


def test_list_then_watch_resumes_and_relists_on_410():
    server = _script()
    _, (state, seen) = asyncio.run(_follow(server))
    assert seen == [
        ("relist", ["a", "b"], "10"),
        ("ADDED", "d"),
        ("relist", ["c"], "20"),
        ("MODIFIED", "c"),
    ]
    version, stats, synced, last_event_at = state
    assert version == "21" and synced and last_event_at is not None
    assert stats == {"events": 2, "bookmarks": 1, "relists": 2, "errors": 1, "expired": 1}
    lists = [(c.get("_continue"), c["limit"]) for c in server.calls if not c.get("watch")]
    assert lists == [(None, 1), ("next", 1), (None, 1)]
    watches = [c for c in server.calls if c.get("watch")]
    assert [c["resource_version"] for c in watches] == ["10", "12", "20", "21"]
    assert all(c["allow_watch_bookmarks"] and c["_preload_content"] is False for c in watches)
    assert {c["label_selector"] for c in server.calls} == {"app=x"}
