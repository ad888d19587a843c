"""A TLS proxy on 127.0.0.1 between a client (the hub, a service) and the real kube-apiserver,
answering chosen requests with a fault instead: a status (429 with Retry-After, 500), a delay,
a dropped connection, or the real answer lost after the API server acted on it. Without a CA it
is a plain HTTP proxy (in front of the identity provider on loopback).

It presents a serving certificate of its own small PKI (aiinfn_dev's, made in a folder of the
test) and verifies the API server with the cluster's CA; the client's bearer token is passed
through untouched, so the client keeps its own identity and RBAC. The proxy runs in a thread
with its own event loop, so a test blocked in a synchronous call never stalls it.
"""

from __future__ import annotations

import asyncio
import copy
import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import yaml
from aiinfn_dev.devcluster import pki
from aiohttp import web

# Headers that belong to one hop; aiohttp sets its own.
HOP = {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "upgrade"}


@dataclass
class Fault:
    """What the proxy does to requests whose method and path (no query) match: answer `status`
    without asking the server (or, with `after_upstream`, after it has acted: the answer is
    lost), or `drop` the connection, after `delay` seconds; `times` requests, then it lets them
    through (None: until cleared). A delay with `after_upstream` and no status holds the server's
    answer: the server has acted before the client can give up (a client that gives up during a
    delay before the server cancels the request, and the server never sees it)."""

    method: str
    path: str  # a regular expression, matched in full
    status: int | None = None
    retry_after: int | None = None
    delay: float = 0.0
    after_upstream: bool = False
    drop: bool = False  # close the connection without an answer (a server that went away)
    times: int | None = None
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        return self.method in ("*", method) and re.fullmatch(self.path, path) is not None


@dataclass
class Seen:
    method: str
    path: str
    status: int
    faulted: bool
    at: float = field(default_factory=time.monotonic)


@dataclass
class FaultProxy:
    """Start with `start()`, point a client at `kubeconfig(...)`, inject with `inject(...)`."""

    upstream: str
    upstream_ca: Path | None  # None: plain HTTP on both sides (an identity provider on loopback)
    folder: Path
    faults: list[Fault] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    url: str = ""
    _streams: set = field(default_factory=set)

    def start(self) -> None:
        if self.upstream_ca is not None:
            pki.create_pki(self.folder)
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(30)
        if not self.url:
            raise RuntimeError("the fault proxy did not start")

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)

    def inject(self, fault: Fault) -> Fault:
        self.faults.append(fault)
        return fault

    def clear(self) -> None:
        self.faults.clear()

    def requests(self, method: str, path: str, faulted: bool | None = None) -> list[Seen]:
        """Requests seen for a method and path pattern (only faulted or not, if given)."""
        return [
            s
            for s in list(self.seen)
            if s.method == method
            and re.fullmatch(path, s.path)
            and (faulted is None or s.faulted == faulted)
        ]

    def cut_streams(self) -> None:
        """Break every answer still streaming (the watches), as a restarting server would."""
        for task in list(self._streams):
            self._loop.call_soon_threadsafe(task.cancel)

    def kubeconfig(self, source: Path, target: Path) -> Path:
        """A copy of the kubeconfig `source` whose cluster is this proxy (its CA trusted)."""
        config = copy.deepcopy(yaml.safe_load(source.read_text()))
        for cluster in config["clusters"]:
            cluster["cluster"]["server"] = self.url
            cluster["cluster"]["certificate-authority"] = str(self.folder / "ca.crt")
            cluster["cluster"].pop("certificate-authority-data", None)
        target.write_text(yaml.safe_dump(config))
        target.chmod(0o600)
        return target

    # -- the server, in its own thread --------------------------------------------------------

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._open())
        ready.set()
        self._loop.run_forever()

    async def _open(self) -> None:
        client_tls, server_tls = None, None
        if self.upstream_ca is not None:
            client_tls = ssl.create_default_context(cafile=str(self.upstream_ca))
            server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server_tls.load_cert_chain(self.folder / "serving.crt", self.folder / "serving.key")
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_tls or True), timeout=timeout
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # A client that goes away cancels its handler (a watch is not read on for minutes).
        self._runner = web.AppRunner(
            app, handle_signals=False, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=server_tls)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"{'https' if server_tls else 'http'}://127.0.0.1:{port}"

    async def _close(self) -> None:
        await self._runner.cleanup()
        await self._session.close()

    def _fault(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.matches(method, path):
                fault.hits += 1
                return fault
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        fault = self._fault(request.method, request.path)
        if fault and fault.delay and not fault.after_upstream:
            await asyncio.sleep(fault.delay)
        if fault and fault.drop:
            self.seen.append(Seen(request.method, request.path, 0, True))
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # nothing is written to the closed connection
        if fault and fault.status and not fault.after_upstream:
            return self._refusal(request, fault)
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        url = self.upstream + request.rel_url.raw_path_qs
        async with self._session.request(
            request.method, url, headers=headers, data=body or None
        ) as upstream:
            if fault and fault.status:
                await upstream.read()  # the API server acted; its answer is lost
                return self._refusal(request, fault)
            response = web.StreamResponse(status=upstream.status)
            for name, value in upstream.headers.items():
                if name.lower() not in HOP | {"content-encoding"}:
                    response.headers[name] = value
            self.seen.append(Seen(request.method, request.path, upstream.status, bool(fault)))
            if fault and fault.after_upstream:
                await asyncio.sleep(fault.delay)
            self._streams.add(asyncio.current_task())
            try:
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except (ConnectionResetError, aiohttp.ClientPayloadError):
                pass  # the client went away (a watch it stopped), or the API server did
            finally:
                self._streams.discard(asyncio.current_task())
            return response

    def _refusal(self, request: web.Request, fault: Fault) -> web.Response:
        """A Status body as the API server writes one."""
        self.seen.append(Seen(request.method, request.path, fault.status or 0, True))
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
        reason = {429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}
        status = {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": f"injected fault {fault.status}",
            "reason": reason.get(fault.status or 0, "InternalError"),
            "code": fault.status,
        }
        return web.json_response(status, status=fault.status or 500, headers=headers)
