"""A fake Kubernetes API server: a real HTTPS process for the objects ipamd uses.

As moto_server stands in for EC2, this stands in for kube-apiserver (no real one can be had
here). It serves the real REST paths and JSON of Nodes, Pods, Namespaces, Events
(``v1`` and ``events.k8s.io/v1``, kept apart), ENIConfigs (``crd.k8s.amazonaws.com/v1alpha1``)
and CNINodes (``networking.k8s.aws/v1alpha1``), with ``/version``, ``/api``, ``/apis`` and the
per-group discovery documents ``kubectl`` needs, and ``Table`` answers for ``kubectl get``.

- TLS (certificate and key given) and bearer tokens (several may be valid at once; the admin
  API replaces them, as a token rotation does).
- LIST and WATCH with resourceVersion: one global counter; the last ``--history`` changes are
  kept, a watch from an older version gets an ``ERROR`` event with a 410 ``Expired`` Status.
  ``allowWatchBookmarks`` brings a ``BOOKMARK`` every ``--bookmark-interval`` seconds of
  quiet; ``timeoutSeconds`` ends a watch; ``resourceVersion`` 0 or none starts with the
  current objects as ``ADDED``. Field selectors (``=``, ``==``, ``!=`` on any dotted path)
  and label selectors (equality, ``in``, ``notin``, exists); an object that stops matching
  shows as ``DELETED`` to that watch, as the real server does.
- POST, PUT (409 on a stale resourceVersion), DELETE, PATCH as JSON merge patch and as
  strategic merge patch (merged like a merge patch: right for labels, annotations and the
  objects' spec maps; lists are replaced), 409 when the patch's
  ``metadata.resourceVersion`` is stale.
- Fault injection on a separate plain-HTTP admin port (never behind the faults):
  ``POST /faults`` ``{"status": 429|500|..., "count": n, "method": "GET", "path": "regex",
  "watch": true|false, "retry_after": s, "delay": s}`` (``"status": 0`` with a ``delay``:
  slowness only, the request is then served), ``DELETE /faults``,
  ``POST /drop-watches`` (connections cut mid-stream), ``POST /outage`` ``{"seconds": s}``
  (the listening socket closes and every connection is cut; back after ``s`` seconds or on
  ``POST /restore``), ``POST /compact``, ``POST /tokens``, ``POST /config``, ``POST /reset``,
  and ``GET /requests`` (every request received: method, path, query, watch, status).

CLI: ``python -m tests.rigs.fake_apiserver --port 6443 --admin-port 6444 --cert c.pem
--key k.pem --token secret``. It prints ``READY`` when both ports listen.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.rigs.apidiscovery import (
    api_group_list,
    openapi_group_version,
    openapi_index,
    resource_list,
    table,
    wants_table,
)
from tests.rigs.apistore import (
    BY_PATH,
    RESOURCES,
    ApiFailure,
    Change,
    Obj,
    Resource,
    Store,
    parse_field_selector,
    parse_label_selector,
    status,
    strip_directives,
)

SERVER_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-fake",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.23",
    "compiler": "gc",
    "platform": "linux/amd64",
}
MERGE = "application/merge-patch+json"
OPENAPI_V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
STRATEGIC = "application/strategic-merge-patch+json"


@dataclass
class Fault:
    status: int = 500
    count: int = 1
    method: str = ""
    path: str = ""
    watch: bool | None = None
    retry_after: float | None = None
    delay: float = 0.0

    def matches(self, request: web.Request, watch: bool) -> bool:
        if self.count <= 0:
            return False
        if self.method and request.method != self.method.upper():
            return False
        if self.path and not re.search(self.path, request.path):
            return False
        return self.watch is None or self.watch == watch


@dataclass(eq=False)
class Watch:
    """One open watch stream."""

    queue: asyncio.Queue[Change]
    transport: Any
    dropped: asyncio.Event = field(default_factory=asyncio.Event)


class FakeApiServer:
    def __init__(
        self,
        tokens: list[str],
        ssl_context: ssl.SSLContext | None,
        host: str = "127.0.0.1",
        port: int = 0,
        bookmark_interval: float = 1.0,
        history: int = 1000,
    ) -> None:
        self.store = Store(history=history)
        self.tokens = set(tokens)
        self.ssl_context = ssl_context
        self.host, self.port = host, port
        self.bookmark_interval = bookmark_interval
        self.faults: list[Fault] = []
        self.requests: list[dict[str, Any]] = []
        self.watches: set[Watch] = set()
        self.down = False
        self._outage_task: asyncio.Task[None] | None = None
        self.app = web.Application(middlewares=[self._middleware])
        self.app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self.runner = web.AppRunner(self.app, handler_cancellation=True)
        self.site: web.TCPSite | None = None
        self._seed_namespaces()

    def _seed_namespaces(self) -> None:
        ns = BY_PATH[("", "v1", "namespaces")]
        for name in ("default", "kube-system"):
            with contextlib.suppress(ApiFailure):
                self.store.create(ns, "", {"metadata": {"name": name}})

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.runner.setup()
        await self._listen()

    async def _listen(self) -> None:
        self.site = web.TCPSite(
            self.runner, self.host, self.port, ssl_context=self.ssl_context, reuse_address=True
        )
        await self.site.start()
        if not self.port:
            server = self.site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def outage(self, seconds: float | None) -> None:
        """Go away: close the listening socket and cut every connection."""
        self.down = True
        self.drop_watches()
        if self.site is not None:
            await self.site.stop()
            self.site = None
        if self._outage_task is not None:
            self._outage_task.cancel()
        if seconds is not None:
            self._outage_task = asyncio.ensure_future(self._restore_after(seconds))

    async def _restore_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self._outage_task = None
        await self.restore()

    async def restore(self) -> None:
        if self._outage_task is not None:
            self._outage_task.cancel()
            self._outage_task = None
        if self.site is None:
            await self._listen()
        self.down = False

    def drop_watches(self) -> None:
        for w in list(self.watches):
            w.dropped.set()

    # ------------------------------------------------------------ middleware

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        if self.down:  # a kept-alive connection from before the outage
            if request.transport is not None:
                request.transport.close()
            raise web.HTTPServiceUnavailable()
        watch = request.query.get("watch") in ("true", "1")
        entry = {
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "watch": watch,
            "status": 0,
            "at": time.time(),
        }
        self.requests.append(entry)
        for fault in self.faults:
            if fault.matches(request, watch):
                fault.count -= 1
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.status:
                    entry["status"] = fault.status
                    headers = {}
                    if fault.retry_after is not None:
                        headers["Retry-After"] = str(int(fault.retry_after))
                    reason = {429: "TooManyRequests", 500: "InternalError"}.get(
                        fault.status, "ServiceUnavailable"
                    )
                    return json_response(
                        status(fault.status, reason, "injected fault"), fault.status, headers
                    )
                break
        if not self._authorized(request):
            entry["status"] = 401
            return json_response(status(401, "Unauthorized", "Unauthorized"), 401)
        try:
            response: web.StreamResponse = await handler(request)
        except ApiFailure as e:
            entry["status"] = e.code
            return json_response(status(e.code, e.reason, e.message), e.code)
        entry["status"] = response.status
        return response

    def _authorized(self, request: web.Request) -> bool:
        if request.path in ("/healthz", "/livez", "/readyz"):
            return True
        auth = request.headers.get("Authorization", "")
        return auth.startswith("Bearer ") and auth[7:].strip() in self.tokens

    # ------------------------------------------------------------ routing

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        parts = [p for p in path.split("/") if p]
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path == "/version":
            return json_response(SERVER_VERSION)
        if path == "/api":
            return json_response(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self.port}"}
                    ],
                }
            )
        if path == "/apis":
            return json_response(api_group_list())
        if path == "/openapi/v3":
            return json_response(openapi_index())
        if path == "/openapi/v2":
            # An empty OpenAPI v2 document: kubectl before 1.27 (Debian's is 1.20) downloads
            # it, as protobuf, to validate and patch; with no schema it validates nothing
            # and patches built-in kinds from their Go structs.
            if "protobuf" in request.headers.get("Accept", ""):
                return web.Response(body=b"", content_type=OPENAPI_V2_PROTOBUF)
            return json_response({"swagger": "2.0", "info": {"title": "fake", "version": "v1"}})
        if parts[:2] == ["openapi", "v3"]:
            return json_response(openapi_group_version("/".join(parts[2:])))
        if parts[:1] == ["api"] and len(parts) == 2:
            return json_response(resource_list("", parts[1]))
        if parts[:1] == ["apis"] and len(parts) == 3:
            return json_response(resource_list(parts[1], parts[2]))
        if parts[:1] == ["api"] and len(parts) >= 3:
            return await self._resource(request, "", parts[1], parts[2:])
        if parts[:1] == ["apis"] and len(parts) >= 4:
            return await self._resource(request, parts[1], parts[2], parts[3:])
        raise ApiFailure(404, "NotFound", "the server could not find the requested resource")

    async def _resource(
        self, request: web.Request, group: str, version: str, rest: list[str]
    ) -> web.StreamResponse:
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        res = BY_PATH.get((group, version, rest[0]))
        if res is None or len(rest) > 2 or (namespace is not None and not res.namespaced):
            raise ApiFailure(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) == 2 else None
        ns = (namespace or "") if res.namespaced else ""
        method = request.method
        if name is None:
            if method == "GET":
                scope = namespace if res.namespaced else None
                if request.query.get("watch") in ("true", "1"):
                    return await self._watch(request, res, scope)
                return self._list(request, res, scope)
            if method == "POST":
                if res.namespaced and namespace is None:
                    raise ApiFailure(405, "MethodNotAllowed", "create needs a namespace")
                body = await read_json(request)
                ns_of_body = (body.get("metadata") or {}).get("namespace")
                if ns_of_body and namespace and ns_of_body != namespace:
                    raise ApiFailure(400, "BadRequest", "the namespace does not match")
                return json_response(self.store.create(res, ns, body), 201)
            raise ApiFailure(405, "MethodNotAllowed", f"{method} not allowed")
        if method == "GET":
            return self._one(request, res, self.store.get(res, ns, name))
        if method == "PUT":
            return json_response(self.store.replace(res, ns, name, await read_json(request)))
        if method == "PATCH":
            ctype = request.content_type
            body = await read_json(request)
            if ctype == STRATEGIC:
                body = strip_directives(body)
            elif ctype != MERGE:
                raise ApiFailure(415, "UnsupportedMediaType", f"patch type {ctype} not supported")
            return json_response(self.store.patch(res, ns, name, body))
        if method == "DELETE":
            return json_response(self.store.delete(res, ns, name))
        raise ApiFailure(405, "MethodNotAllowed", f"{method} not allowed")

    # ------------------------------------------------------------ reads

    def _one(self, request: web.Request, res: Resource, obj: Obj) -> web.Response:
        if wants_table(request):
            return json_response(table(res, [obj], str(self.store.rv)))
        return json_response(obj)

    def _list(self, request: web.Request, res: Resource, namespace: str | None) -> web.Response:
        match = selector(request)
        items = [o for o in self.store.list(res, namespace) if match(o)]
        rv = str(self.store.rv)
        meta: dict[str, Any] = {"resourceVersion": rv}
        limit = int(request.query.get("limit") or 0)
        start = int(request.query.get("continue") or 0)
        if limit:
            page = items[start : start + limit]
            if start + limit < len(items):
                meta["continue"] = str(start + limit)
                meta["remainingItemCount"] = len(items) - start - limit
            items = page
        if wants_table(request):
            return json_response(table(res, items, rv, meta))
        return json_response(
            {
                "kind": f"{res.kind}List",
                "apiVersion": res.api_version,
                "metadata": meta,
                "items": items,
            }
        )

    async def _watch(
        self, request: web.Request, res: Resource, namespace: str | None
    ) -> web.StreamResponse:
        match = selector(request)
        bookmarks = request.query.get("allowWatchBookmarks") in ("true", "1")
        timeout = float(request.query.get("timeoutSeconds") or 1800)
        rv_text = request.query.get("resourceVersion") or ""
        since = int(rv_text) if rv_text.isdigit() else 0
        if rv_text and not rv_text.isdigit():
            raise ApiFailure(400, "BadRequest", f"invalid resourceVersion {rv_text!r}")

        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)

        def in_scope(obj: Obj) -> bool:
            ns = (obj.get("metadata") or {}).get("namespace", "")
            return namespace is None or ns == namespace

        if since and since < self.store.compacted:
            message = f"too old resource version: {since} ({self.store.compacted})"
            await write_event(response, "ERROR", status(410, "Expired", message))
            return response
        watch = Watch(asyncio.Queue(), request.transport)
        self.store.listeners.append(watch.queue.put_nowait)
        self.watches.add(watch)
        try:
            if since == 0:
                for obj in self.store.list(res, namespace):
                    if match(obj):
                        await write_event(response, "ADDED", obj)
            else:
                for change in list(self.store.changes):
                    if change.rv > since:
                        watch.queue.put_nowait(change)
            deadline = asyncio.get_running_loop().time() + timeout
            while True:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                wait = min(left, self.bookmark_interval) if bookmarks else left
                change = await next_change(watch, wait)
                if watch.dropped.is_set():
                    if request.transport is not None:
                        request.transport.abort()
                    return response
                if change is None:
                    if bookmarks and watch.queue.empty() and left > self.bookmark_interval:
                        mark = {
                            "kind": res.kind,
                            "apiVersion": res.api_version,
                            "metadata": {"resourceVersion": str(self.store.rv)},
                        }
                        await write_event(response, "BOOKMARK", mark)
                    continue
                if change.res != res.key or change.rv <= since:
                    continue
                type_ = visible_type(change, lambda o: in_scope(o) and match(o))
                if type_:
                    await write_event(response, type_, change.obj)
        finally:
            self.watches.discard(watch)
            with contextlib.suppress(ValueError):
                self.store.listeners.remove(watch.queue.put_nowait)
        return response


async def next_change(watch: Watch, wait: float) -> Change | None:
    getter = asyncio.ensure_future(watch.queue.get())
    dropped = asyncio.ensure_future(watch.dropped.wait())
    try:
        await asyncio.wait({getter, dropped}, timeout=wait, return_when="FIRST_COMPLETED")
    finally:  # also when the handler is cancelled (the client went away)
        dropped.cancel()
        if not getter.done():
            getter.cancel()
    if getter.done() and not getter.cancelled():
        return getter.result()
    return None


def visible_type(change: Change, match: Callable[[Obj], bool]) -> str:
    """The event type a watch with this filter sees for a change ("" for none)."""
    now = match(change.obj)
    before = change.old is not None and match(change.old)
    if change.type == "ADDED":
        return "ADDED" if now else ""
    if change.type == "DELETED":
        return "DELETED" if before else ""
    if now and before:
        return "MODIFIED"
    if now:
        return "ADDED"
    return "DELETED" if before else ""


def selector(request: web.Request) -> Callable[[Obj], bool]:
    fields = parse_field_selector(request.query.get("fieldSelector", ""))
    labels = parse_label_selector(request.query.get("labelSelector", ""))
    return lambda o: fields(o) and labels(o)


async def write_event(response: web.StreamResponse, type_: str, obj: Obj) -> None:
    line = json.dumps({"type": type_, "object": obj}, separators=(",", ":")) + "\n"
    await response.write(line.encode())


async def read_json(request: web.Request) -> Obj:
    try:
        body = json.loads(await request.read())
    except ValueError as e:
        raise ApiFailure(400, "BadRequest", f"invalid JSON: {e}") from e
    if not isinstance(body, dict):
        raise ApiFailure(400, "BadRequest", "the body is not an object")
    return body


def json_response(
    body: Any, code: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        text=json.dumps(body), status=code, content_type="application/json", headers=headers
    )


# ------------------------------------------------------------ admin API


def admin_app(server: FakeApiServer) -> web.Application:
    app = web.Application()
    routes = web.RouteTableDef()

    @routes.get("/healthz")
    async def healthz(_: web.Request) -> web.Response:
        return json_response({"port": server.port, "down": server.down})

    @routes.get("/requests")
    async def requests(_: web.Request) -> web.Response:
        return json_response({"requests": server.requests})

    @routes.post("/requests/clear")
    async def clear_requests(_: web.Request) -> web.Response:
        server.requests.clear()
        return json_response({})

    @routes.post("/faults")
    async def add_fault(request: web.Request) -> web.Response:
        server.faults.append(Fault(**(await request.json())))
        return json_response({"faults": len(server.faults)})

    @routes.delete("/faults")
    async def clear_faults(_: web.Request) -> web.Response:
        server.faults.clear()
        return json_response({})

    @routes.post("/drop-watches")
    async def drop(_: web.Request) -> web.Response:
        n = len(server.watches)
        server.drop_watches()
        return json_response({"dropped": n})

    @routes.get("/watches")
    async def watches(_: web.Request) -> web.Response:
        return json_response({"open": len(server.watches)})

    @routes.post("/outage")
    async def outage(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        await server.outage(body.get("seconds"))
        return json_response({"down": True})

    @routes.post("/restore")
    async def restore(_: web.Request) -> web.Response:
        await server.restore()
        return json_response({"down": False})

    @routes.post("/compact")
    async def compact(request: web.Request) -> web.Response:
        """As if ``writes`` (1) changes happened elsewhere and etcd compacted them away:
        every version before now is too old to watch from."""
        body = await request.json() if request.can_read_body else {}
        server.store.rv += int(body.get("writes", 1))
        server.store.compact()
        return json_response({"compacted": server.store.compacted})

    @routes.post("/tokens")
    async def tokens(request: web.Request) -> web.Response:
        server.tokens = set((await request.json())["tokens"])
        return json_response({})

    @routes.post("/config")
    async def config(request: web.Request) -> web.Response:
        body = await request.json()
        if "bookmark_interval" in body:
            server.bookmark_interval = float(body["bookmark_interval"])
        if "history" in body:
            server.store.history = int(body["history"])
        return json_response({})

    @routes.post("/reset")
    async def reset(_: web.Request) -> web.Response:
        server.faults.clear()
        server.requests.clear()
        server.drop_watches()
        for res in RESOURCES:
            for obj in list(server.store.list(res, None)):
                meta = obj["metadata"]
                server.store.delete(res, meta.get("namespace", ""), meta["name"])
        server._seed_namespaces()
        server.store.compact()
        return json_response({"resourceVersion": server.store.rv})

    app.add_routes(routes)
    return app


async def serve(args: argparse.Namespace) -> None:
    ctx = None
    if args.cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.cert, args.key)
    server = FakeApiServer(
        args.token,
        ctx,
        host=args.host,
        port=args.port,
        bookmark_interval=args.bookmark_interval,
        history=args.history,
    )
    await server.start()
    admin = web.AppRunner(admin_app(server))
    await admin.setup()
    await web.TCPSite(admin, args.host, args.admin_port, reuse_address=True).start()
    print("READY", flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=6443)
    p.add_argument("--admin-port", type=int, default=6444)
    p.add_argument("--cert", default="")
    p.add_argument("--key", default="")
    p.add_argument("--token", action="append", default=[], help="a valid bearer token (repeat)")
    p.add_argument("--bookmark-interval", type=float, default=1.0)
    p.add_argument("--history", type=int, default=1000)
    args = p.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))


if __name__ == "__main__":
    main()
