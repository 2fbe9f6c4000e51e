"""`kubectl lockgate dashboard`: a local web UI of lockgate's Applications and Deployments.

A small HTTP server of the standard library (one thread per connection), bound to loopback
unless `--address` says otherwise, talking to the cluster with the user's own kubeconfig: it
shows and does exactly what the user may, and an action the user may not take is refused
with the API server's own reason. Pages are rendered on the server (dashboard_view); a
little JavaScript (dashboard_assets/) keeps them live through server-sent events fed from a
Kubernetes watch, and asks for a confirmation before each action. Actions go through the
plugin's own functions (kubectl.request_action / request_pause): the same annotation and
spec paths as `kubectl lockgate promote|abort|retry|pause|resume`.

Security: every request's Host must name this server (no DNS rebinding); every POST must
come from this server's own pages (Origin) and carry the per-run CSRF token; responses
carry a Content-Security-Policy allowing only this server's own script and style.
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import json
import queue
import secrets
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from lockgate.names import GROUP, VERSION

from . import dashboard_view as view
from .kubectl import (
    PluginError,
    Target,
    call,
    connect,
    explain,
    get_application_spec,
    get_deployment,
    kube_call,
    request_action,
    request_pause,
    step_descriptions,
    step_kinds,
)
from .kubectl_view import refusal

WATCH_SECONDS = 10  # a watch round ends this often when nothing happens: then a keep-alive
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
ASSETS = {
    "/static/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/static/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}


@dataclass(frozen=True)
class Snapshot:
    """Every object of a kind as listed (a watch (re)started): replaces what was known."""

    items: list[dict[str, Any]]


@dataclass(frozen=True)
class Change:
    """One watch event: ADDED, MODIFIED or DELETED."""

    type: str
    obj: dict[str, Any]


@dataclass(frozen=True)
class Problem:
    """The watch failed (forbidden, unreachable); it is retried."""

    message: str


@dataclass(frozen=True)
class Idle:
    """A watch round ended with nothing new: a moment to send a keep-alive."""


WatchItem = Snapshot | Change | Problem | Idle


class Backend(Protocol):
    """What the dashboard needs from the cluster (KubeBackend; a fake in the unit tests)."""

    namespace: str | None  # None: every namespace

    def list_objects(self, plural: str) -> list[dict[str, Any]]: ...

    def get(self, namespace: str, name: str) -> dict[str, Any]: ...

    def steps(self, obj: dict[str, Any]) -> tuple[list[str] | None, list[tuple[str, bool]]]: ...

    def watch(
        self, plural: str, namespace: str | None, name: str | None, stop: threading.Event
    ) -> Iterator[WatchItem]: ...

    def act(self, namespace: str, name: str, action: str) -> str: ...


class KubeBackend:
    """The cluster through the user's kubeconfig and the plugin's own functions."""

    def __init__(self, target: Target, all_namespaces: bool) -> None:
        self.target = target
        self.namespace: str | None = None if all_namespaces else target.namespace

    def _in(self, namespace: str | None) -> Target:
        return self.target.in_namespace(namespace or "")

    def list_objects(self, plural: str) -> list[dict[str, Any]]:
        target = self._in(self.namespace)
        listed = call(
            target, "list", f"{plural}.{GROUP}", None, lambda: target.list(plural, self.namespace)
        )
        return list(listed.get("items") or [])

    @staticmethod
    def _lister(
        target: Target, namespace: str | None, plural: str
    ) -> tuple[Callable[..., Any], tuple[str, ...]]:
        if namespace is None:
            return target.custom.list_cluster_custom_object, (GROUP, VERSION, plural)
        return target.custom.list_namespaced_custom_object, (GROUP, VERSION, namespace, plural)

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        return get_deployment(self._in(namespace), name)

    def steps(self, obj: dict[str, Any]) -> tuple[list[str] | None, list[tuple[str, bool]]]:
        meta = obj.get("metadata") or {}
        app = (obj.get("spec") or {}).get("application", "")
        app_spec = get_application_spec(self._in(meta.get("namespace")), app)
        return step_descriptions(app_spec, obj), step_kinds(app_spec, obj)

    def watch(
        self, plural: str, namespace: str | None, name: str | None, stop: threading.Event
    ) -> Iterator[WatchItem]:
        """List, then watch from the list's resourceVersion; again from a new list when the
        version is gone (410). Ends once `stop` is set."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        target = self._in(namespace)
        resource = f"{plural}.{GROUP}"
        selector = {"field_selector": f"metadata.name={name}"} if name else {}
        fn, args = self._lister(target, namespace, plural)
        version: str | None = None
        while not stop.is_set():
            try:
                if version is None:
                    listed: dict[str, Any] = call(
                        target, "list", resource, name, lambda: kube_call(fn, *args, **selector)
                    )
                    version = listed["metadata"]["resourceVersion"]
                    yield Snapshot(list(listed.get("items") or []))
                stream = watch.Watch()
                for event in stream.stream(
                    fn,
                    *args,
                    **selector,
                    resource_version=version,
                    timeout_seconds=WATCH_SECONDS,
                    allow_watch_bookmarks=True,
                    _request_timeout=WATCH_SECONDS + 15,
                ):
                    obj = event["object"]
                    version = (obj.get("metadata") or {}).get("resourceVersion") or version
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        yield Change(event["type"], obj)
                    if stop.is_set():
                        stream.stop()
                        return
                yield Idle()
            except ApiException as err:
                if err.status == 410:
                    version = None
                    continue
                yield Problem(str(explain(target, "watch", resource, name, err)))
                stop.wait(3)
            except PluginError as err:
                yield Problem(str(err))
                stop.wait(3)
            except (HTTPError, OSError) as err:
                yield Problem(f"cannot reach the cluster at {target.server}: {err}")
                version = None
                stop.wait(3)

    def act(self, namespace: str, name: str, action: str) -> str:
        target = self._in(namespace)
        if action in ("pause", "resume"):
            request_pause(target, name, action == "pause")
            return f"{name}: spec.paused set to {str(action == 'pause').lower()}"
        before = request_action(target, name, action)
        phase = (before.get("status") or {}).get("phase") or "Pending"
        shown = "promote fully" if action == "promote-full" else action
        return f"{shown} requested for {name} (it was {phase}); the operator takes it next"


@dataclass
class Settings:
    backend: Backend
    address: str
    port: int
    csrf: str

    def hosts(self) -> set[str]:
        """The Host header values naming this server."""
        names = {"127.0.0.1", "localhost", "[::1]"}
        if self.address not in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "::"):
            names.add(f"[{self.address}]" if ":" in self.address else self.address)
        return {f"{n}:{self.port}" for n in names}

    def origins(self) -> set[str]:
        return {f"http://{h}" for h in self.hosts()}


def refusals(obj: dict[str, Any], kinds: list[tuple[str, bool]]) -> dict[str, str | None]:
    """Why each action would be refused now (the plugin's own check), None when it applies."""
    return {
        action: refusal(action, obj, kinds if action == "promote" else None)
        for action in view.ACTION_NAMES
    }


class Handler(BaseHTTPRequestHandler):
    server_version = "lockgate-dashboard"
    settings: Settings  # set on the class made per server (make_server)

    # ----------------------------------------------------------------------------- plumbing

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"dashboard: {self.address_string()} {format % args}\n")

    def _send(
        self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self._common_headers()
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _common_headers(self) -> None:
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")

    def _html(self, status: int, html: str) -> None:
        self._send(status, html.encode("utf-8"), "text/html; charset=utf-8")

    def _json(self, status: int, data: dict[str, Any]) -> None:
        self._send(status, json.dumps(data).encode("utf-8"), "application/json")

    def _refuse(self, status: int, message: str) -> None:
        if "application/json" in (self.headers.get("Accept") or ""):
            self._json(status, {"ok": False, "message": message})
        else:
            self._html(status, view.message_page("Refused", message, "/", ok=False))

    def _host_ok(self) -> bool:
        host = (self.headers.get("Host") or "").lower()
        if host in self.settings.hosts():
            return True
        self._refuse(HTTPStatus.MISDIRECTED_REQUEST, f"this server does not answer for {host!r}")
        return False

    def _route(self) -> tuple[str, list[str]]:
        path = urlsplit(self.path).path
        return path, [unquote(p) for p in path.strip("/").split("/")] if path != "/" else []

    def _in_scope(self, namespace: str) -> bool:
        scope = self.settings.backend.namespace
        return scope is None or scope == namespace

    # ----------------------------------------------------------------------------- GET

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        if not self._host_ok():
            return
        path, parts = self._route()
        try:
            if path in ASSETS:
                name, content_type = ASSETS[path]
                data = resources.files("lockgate.cli").joinpath(f"dashboard_assets/{name}")
                self._send(HTTPStatus.OK, data.read_bytes(), content_type)
            elif path in ("/", ""):
                self._list_page()
            elif path == "/events":
                self._list_events()
            elif len(parts) == 4 and parts[0] == "ns" and parts[2] == "deployments":
                self._deployment_page(parts[1], parts[3])
            elif len(parts) == 5 and parts[0] == "ns" and parts[4] == "events":
                self._deployment_events(parts[1], parts[3])
            elif path == "/favicon.ico":
                self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
            else:
                self._html(
                    HTTPStatus.NOT_FOUND, view.message_page("Not found", path, "/", ok=False)
                )
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _scope_text(self) -> str:
        scope = self.settings.backend.namespace
        return "all namespaces" if scope is None else f"namespace {scope}"

    def _list_sections(self) -> tuple[dict[str, str], str | None]:
        backend = self.settings.backend
        problems = []
        found: dict[str, list[dict[str, Any]]] = {}
        for plural in ("applications", "deployments"):
            try:
                found[plural] = backend.list_objects(plural)
            except PluginError as err:
                problems.append(str(err))
                found[plural] = []
        sections = view.render_list(
            found["applications"], found["deployments"], backend.namespace is None
        )
        return sections, "; ".join(problems) or None

    def _list_page(self) -> None:
        sections, problem = self._list_sections()
        html = view.page(
            "Rollouts",
            sections,
            view.LIST_SECTIONS,
            csrf=self.settings.csrf,
            events="/events",
            scope=self._scope_text(),
        )
        if problem:
            html = html.replace(
                '<div id="result" role="status" aria-live="polite"></div>',
                f'<div id="result" role="status" aria-live="polite">'
                f'<p class="error">{view.t(problem)}</p></div>',
            )
        self._html(HTTPStatus.OK, html)

    def _deployment_sections(self, obj: dict[str, Any], steps: Any) -> dict[str, str]:
        descriptions, kinds = steps
        return view.render_deployment(obj, descriptions, self.settings.csrf, refusals(obj, kinds))

    def _deployment_page(self, namespace: str, name: str) -> None:
        if not self._in_scope(namespace):
            self._refuse(HTTPStatus.NOT_FOUND, f"namespace {namespace} is not shown here")
            return
        backend = self.settings.backend
        try:
            obj = backend.get(namespace, name)
        except PluginError as err:
            self._html(HTTPStatus.NOT_FOUND, view.message_page(name, str(err), "/", ok=False))
            return
        sections = self._deployment_sections(obj, backend.steps(obj))
        url = view.deployment_url(namespace, name)
        crumbs = f'&rsaquo; <a href="/">{view.t(self._scope_text())}</a> &rsaquo; {view.t(name)}'
        self._html(
            HTTPStatus.OK,
            view.page(
                f"Deployment {name}",
                sections,
                view.DEPLOYMENT_SECTIONS,
                csrf=self.settings.csrf,
                events=f"{url}/events",
                crumbs=crumbs,
                scope=f"namespace {namespace}",
            ),
        )

    # ----------------------------------------------------------------------------- SSE

    def _start_stream(self) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self._common_headers()
        self.send_header("X-Accel-Buffering", "no")
        self.end_headers()
        self.wfile.write(b"retry: 2000\n\n")
        self.wfile.flush()

    def _write(self, frame: bytes) -> None:
        self.wfile.write(frame)
        self.wfile.flush()

    def _deployment_events(self, namespace: str, name: str) -> None:
        if not self._in_scope(namespace):
            self._refuse(HTTPStatus.NOT_FOUND, f"namespace {namespace} is not shown here")
            return
        backend = self.settings.backend
        stop = threading.Event()
        self._start_stream()
        sent: dict[str, str] = {}
        steps: Any = None
        spec_seen: Any = None
        try:
            for item in backend.watch("deployments", namespace, name, stop):
                obj: dict[str, Any] | None = None
                if isinstance(item, Snapshot):
                    obj = item.items[0] if item.items else None
                    if obj is None:
                        self._write(view.sse_frame("problem", {"message": f"{name} is gone"}))
                elif isinstance(item, Change):
                    obj = item.obj if item.type != "DELETED" else None
                    if obj is None:
                        self._write(view.sse_frame("problem", {"message": f"{name} was deleted"}))
                elif isinstance(item, Problem):
                    self._write(view.sse_frame("problem", {"message": item.message}))
                else:
                    self._write(view.SSE_KEEPALIVE)
                if obj is None:
                    continue
                key = (obj.get("spec"), bool((obj.get("status") or {}).get("previousImage")))
                if steps is None or key != spec_seen:
                    steps, spec_seen = backend.steps(obj), key
                sections = self._deployment_sections(obj, steps)
                update = view.changed(sent, sections)
                if update:
                    version = (obj.get("metadata") or {}).get("resourceVersion")
                    self._write(view.sse_frame("update", update, version))
                    sent.update(update)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        finally:
            stop.set()

    def _list_events(self) -> None:
        backend = self.settings.backend
        stop = threading.Event()
        items: queue.Queue[tuple[str, WatchItem]] = queue.Queue()

        def feed(plural: str) -> None:
            for item in backend.watch(plural, backend.namespace, None, stop):
                items.put((plural, item))

        known: dict[str, dict[tuple[str, str], dict[str, Any]]] = {
            "applications": {},
            "deployments": {},
        }
        for plural in known:
            threading.Thread(target=feed, args=(plural,), daemon=True).start()
        self._start_stream()
        sent: dict[str, str] = {}
        try:
            while True:
                try:
                    batch = [items.get(timeout=WATCH_SECONDS + 5)]
                except queue.Empty:
                    self._write(view.SSE_KEEPALIVE)
                    continue
                while True:  # take every item already waiting: one render for a burst
                    try:
                        batch.append(items.get_nowait())
                    except queue.Empty:
                        break
                dirty = False
                for plural, item in batch:
                    objects = known[plural]
                    if isinstance(item, Snapshot):
                        objects.clear()
                        for obj in item.items:
                            objects[_key(obj)] = obj
                        dirty = True
                    elif isinstance(item, Change):
                        if item.type == "DELETED":
                            objects.pop(_key(item.obj), None)
                        else:
                            objects[_key(item.obj)] = item.obj
                        dirty = True
                    elif isinstance(item, Problem):
                        self._write(view.sse_frame("problem", {"message": item.message}))
                if not dirty:
                    self._write(view.SSE_KEEPALIVE)
                    continue
                sections = view.render_list(
                    known["applications"].values(),
                    known["deployments"].values(),
                    backend.namespace is None,
                )
                update = view.changed(sent, sections)
                if update:
                    self._write(view.sse_frame("update", update))
                    sent.update(update)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        finally:
            stop.set()

    # ----------------------------------------------------------------------------- POST

    def do_POST(self) -> None:
        if not self._host_ok():
            return
        origin = self.headers.get("Origin")
        if origin not in self.settings.origins():
            self._refuse(
                HTTPStatus.FORBIDDEN,
                f"refused: a request from {origin or 'an unknown origin'} may not act here",
            )
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > 10_000:
            self._refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request too large")
            return
        form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        token = (form.get("csrf") or [""])[0] or self.headers.get("X-CSRF-Token") or ""
        if not hmac.compare_digest(token.encode(), self.settings.csrf.encode()):
            self._refuse(HTTPStatus.FORBIDDEN, "refused: missing or wrong CSRF token")
            return
        path, parts = self._route()
        if not (
            len(parts) == 5
            and parts[0] == "ns"
            and parts[2] == "deployments"
            and parts[4] == "actions"
        ):
            self._refuse(HTTPStatus.NOT_FOUND, f"no action at {path}")
            return
        namespace, name = parts[1], parts[3]
        action = (form.get("action") or [""])[0]
        back = view.deployment_url(namespace, name)
        if action not in view.ACTION_NAMES:
            self._refuse(HTTPStatus.BAD_REQUEST, f"unknown action {action!r}")
            return
        if not self._in_scope(namespace):
            self._refuse(HTTPStatus.NOT_FOUND, f"namespace {namespace} is not shown here")
            return
        wants_json = "application/json" in (self.headers.get("Accept") or "")
        if (form.get("confirmed") or [""])[0] != "1":
            text = f"{action} {name} in namespace {namespace}?"
            form_html = view.confirm_form(f"{back}/actions", action, self.settings.csrf)
            if wants_json:
                self._json(HTTPStatus.BAD_REQUEST, {"ok": False, "message": "not confirmed"})
            else:
                self._html(
                    HTTPStatus.OK,
                    view.message_page("Please confirm", text, back, ok=True, form=form_html),
                )
            return
        try:
            message = self.settings.backend.act(namespace, name, action)
            status, ok = HTTPStatus.OK, True
        except PluginError as err:
            message = str(err)
            status = (
                HTTPStatus.FORBIDDEN if message.startswith("forbidden") else HTTPStatus.CONFLICT
            )
            ok = False
        except Exception as err:  # the page says what went wrong rather than hanging up
            message, status, ok = f"{action} failed: {err}", HTTPStatus.BAD_GATEWAY, False
        if wants_json:
            self._json(status, {"ok": ok, "message": view.redact(message)})
        else:
            self._html(status, view.message_page(f"{action} {name}", message, back, ok=ok))


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace", ""), meta.get("name", "")


class V6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def make_server(settings: Settings) -> ThreadingHTTPServer:
    handler = type("DashboardHandler", (Handler,), {"settings": settings})
    server_class = V6Server if ":" in settings.address else ThreadingHTTPServer
    server = server_class((settings.address, settings.port), handler)
    server.daemon_threads = True
    settings.port = server.server_address[1]
    return server


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def dashboard_command(args: argparse.Namespace) -> int:
    target = connect(args, light=False)  # it watches: the kubernetes client's streams
    backend = KubeBackend(target, args.all_namespaces)
    settings = Settings(backend, args.address, args.port, secrets.token_urlsafe(32))
    if not is_loopback(args.address):
        print(
            f"warning: serving on {args.address}, not loopback: anyone who reaches this "
            "address sees what your kubeconfig may see (actions still need the page's token)",
            file=sys.stderr,
        )
    try:
        server = make_server(settings)
    except OSError as err:
        raise PluginError(f"cannot listen on {args.address}:{args.port}: {err}") from None
    host = f"[{args.address}]" if ":" in args.address else args.address
    scope = "all namespaces" if backend.namespace is None else f"namespace {backend.namespace}"
    print(f"lockgate dashboard for {scope} at http://{host}:{settings.port}/", flush=True)
    print("press Ctrl-C to stop", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
