"""A spawn the Kubernetes API could not act on (throttled, failed, connection broken) fails with
a message the user can act on and a 503, its detail only in the log (k8s.unavailable and
spawner.unavailable_error); a throttled pod create waits its Retry-After and is tried again; a
refused one is logged without the pod (the drill: tests/faults/test_api_faults.py)."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest
from kubernetes_asyncio.client import Configuration, V1ObjectMeta, V1Pod
from kubernetes_asyncio.client.rest import ApiException

from aiinfn_hub import k8s
from aiinfn_hub.errors import to_http_error
from aiinfn_hub.services.cluster import ClusterHandler
from aiinfn_hub.spawner import AiInfnSpawner, reflector_dead, unavailable_error


@pytest.mark.parametrize(
    "error, detail",
    [
        (ApiException(status=429, reason="Too Many Requests"), "429 Too Many Requests"),
        (ApiException(status=500, reason="Internal Server Error"), "500 Internal Server Error"),
        (ApiException(status=503, reason="Service Unavailable"), "503 Service Unavailable"),
        (k8s.ApiError(502, "bad gateway", "Bad Gateway"), "502 Bad Gateway"),
        (aiohttp.ServerDisconnectedError(), "ServerDisconnectedError: Server disconnected"),
        (ConnectionRefusedError(111, "refused"), "ConnectionRefusedError: [Errno 111] refused"),
    ],
)
def test_what_the_api_server_could_not_do_is_unavailable(error, detail):
    assert k8s.unavailable(error) == detail


@pytest.mark.parametrize(
    "error",
    [
        ApiException(status=403, reason="Forbidden"),
        ApiException(status=409, reason="Conflict"),
        ApiException(status=422, reason="Unprocessable Entity"),
        TimeoutError("pod t/jupyter-alice did not start in 60 seconds!"),
        ValueError("a bug"),
    ],
)
def test_refusals_timeouts_and_bugs_are_not(error):
    assert k8s.unavailable(error) is None


def test_the_body_never_reaches_the_detail():
    error = ApiException(status=500, reason="Internal Server Error")
    error.body = b'{"message": "secret-token-value"}'
    assert "secret" not in k8s.unavailable(error)


def test_the_user_sees_a_503_in_words_the_log_gets_the_detail():
    error = unavailable_error("429 Too Many Requests")
    assert (error.status, error.reason) == (503, "unavailable")
    assert error.message == (
        "the cluster could not start your server right now; try again in a minute"
    )
    assert error.log_detail == "Kubernetes API unavailable: 429 Too Many Requests"
    http_error = to_http_error(error)
    assert http_error.status_code == 503
    assert http_error.jupyterhub_message == error.message


@pytest.mark.parametrize(
    "headers, seconds",
    [
        ({"Retry-After": "2"}, 2.0),
        ({}, 1.0),
        ({"Retry-After": "soon"}, 1.0),
        ({"Retry-After": "900"}, 30.0),
    ],
)
def test_retry_after_is_read_and_bounded(headers, seconds):
    error = ApiException(status=429, reason="Too Many Requests")
    error.headers = headers
    assert k8s.retry_after(error) == seconds


class _Pods:
    """The spawner's `api`: answers each create with the next of `answers` (an error or None)."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.creates = 0

    async def create_namespaced_pod(self, namespace, pod, field_validation=None):
        self.creates += 1
        answer = self.answers.pop(0)
        if answer is not None:
            raise answer


class _Spawner:
    def __init__(self, api):
        self.api, self.namespace, self.stopped = api, "ns", 0
        self.log = logging.getLogger("test-spawner")

    async def stop(self, now=False):
        self.stopped += 1


def _pod():
    env = [{"name": "JUPYTERHUB_API_TOKEN", "value": "tok-123"}]
    return V1Pod(
        metadata=V1ObjectMeta(name="jupyter-alice"),
        spec={"containers": [{"name": "notebook", "env": env}]},
    )


def _throttled(seconds: str) -> ApiException:
    error = ApiException(status=429, reason="Too Many Requests")
    error.headers = {"Retry-After": seconds}
    return error


async def test_a_throttled_create_waits_and_asks_for_another_try(monkeypatch):
    waits = []

    async def sleep(seconds):
        waits.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    spawner = _Spawner(_Pods(_throttled("2"), _throttled("60"), None))
    create = AiInfnSpawner._make_create_pod_request
    assert [await create(spawner, _pod(), 5) for _ in range(3)] == [False, False, True]
    assert waits == [2.0, 5.0]  # Retry-After, at most one request timeout


async def test_a_refused_create_raises_and_logs_no_token(caplog):
    spawner = _Spawner(_Pods(ApiException(status=500, reason="Internal Server Error")))
    with pytest.raises(ApiException):
        await AiInfnSpawner._make_create_pod_request(spawner, _pod(), 5)
    assert "jupyter-alice" in caplog.text and "500" in caplog.text
    assert "tok-123" not in caplog.text


async def test_an_existing_pod_is_stopped_and_tried_again():
    spawner = _Spawner(_Pods(ApiException(status=409, reason="Conflict")))
    assert await AiInfnSpawner._make_create_pod_request(spawner, _pod(), 5) is False
    assert spawner.stopped == 1


@pytest.mark.parametrize(
    "error, detail",
    [
        (ApiException(status=429, reason="Too Many Requests"), "429 Too Many Requests"),
        (ApiException(status=500, reason="Internal Server Error"), "500 Internal Server Error"),
        (aiohttp.ServerDisconnectedError(), "ServerDisconnectedError: Server disconnected"),
        (TimeoutError(), "TimeoutError: "),
    ],
)
def test_the_services_answer_503_when_the_cluster_could_not_act(error, detail):
    handler = object.__new__(ClusterHandler)  # as_user_error reads nothing of the request
    refusal = ClusterHandler.as_user_error(handler, error)
    assert (refusal.status, refusal.reason) == (503, "unavailable")
    assert refusal.message == "the cluster cannot be reached right now; try again"
    assert refusal.log_detail == f"Kubernetes API: {detail}"
    assert refusal.headers == {"Retry-After": "5"}


def test_the_services_503_passes_on_the_api_servers_retry_after():
    throttled = ApiException(status=429, reason="Too Many Requests")
    throttled.headers = {"Retry-After": "12"}
    refusal = ClusterHandler.as_user_error(object.__new__(ClusterHandler), throttled)
    assert (refusal.status, refusal.headers) == (503, {"Retry-After": "12"})


class _Reflector:
    def __init__(self, loaded=None, task=None, stopping=False):
        self.first_load_future, self.watch_task, self._stopping = loaded, task, stopping


async def _ended() -> asyncio.Task:
    task = asyncio.ensure_future(asyncio.sleep(0))
    await task
    return task


async def test_a_reflector_whose_first_list_failed_or_whose_watch_ended_is_dead():
    loop = asyncio.get_running_loop()
    failed, loaded, loading = loop.create_future(), loop.create_future(), loop.create_future()
    failed.set_exception(ConnectionRefusedError())
    failed.exception()  # retrieved, as KubeSpawner's waiters do
    loaded.set_result(None)
    running = asyncio.ensure_future(asyncio.sleep(60))
    try:
        assert reflector_dead(_Reflector(failed))
        assert reflector_dead(_Reflector(loaded, await _ended()))
        assert not reflector_dead(_Reflector(loaded, running))
        assert not reflector_dead(_Reflector(loading))
        assert not reflector_dead(_Reflector(loaded, await _ended(), stopping=True))
    finally:
        running.cancel()


async def test_every_call_has_a_timeout_the_default_or_its_own():
    """kubernetes_asyncio's default is none: a call to an API server that never answers would
    wait forever."""
    api = k8s.ApiClient(Configuration())
    await api.close()
    seen = []

    class Rest:
        async def GET(self, url, **kwargs):  # noqa: N802 (kubernetes_asyncio's naming)
            seen.append(kwargs["_request_timeout"])

        POST = GET

    api.rest_client = Rest()
    await api.request("GET", "https://127.0.0.1:1/api")
    await api.request("POST", "https://127.0.0.1:1/api", _request_timeout=5)
    assert seen == [k8s.REQUEST_TIMEOUT, 5]
    assert (k8s.REQUEST_TIMEOUT.sock_connect, k8s.REQUEST_TIMEOUT.sock_read) == (10, 60)
