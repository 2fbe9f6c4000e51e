"""`kubectl lockgate ...`: the cluster-facing commands of the kubectl plugin.

Every command uses the current kubeconfig (KUBECONFIG or ~/.kube/config, `--kubeconfig`),
its current context (`--context`) and that context's namespace (`-n` overrides), as kubectl
does. What is printed comes from lockgate.cli.kubectl_view (pure functions, unit-tested).
Exit codes: 0 ok, 1 error (not found, forbidden, no cluster, refused action), 2 usage.
"""

from __future__ import annotations

import functools
import os
import sys
import time

from lockgate.names import ACTION_ANNOTATION, GROUP, VERSION

from . import fastjson as json  # json.loads and json.dumps without the json package
from .actions import TERMINAL, refusal
from .rest import CredentialError, Rest, RestError, light_client

# What an action needs is imported at the top, the rest where it is used: `kubectl lockgate
# abort` loads no view, no dashboard, no typing or dataclasses (tests/unit/test_footprint.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from typing import Any, TypeVar

    T = TypeVar("T")

REQUEST_TIMEOUT = 15.0
SERVICE_ACCOUNT_NS = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class PluginError(Exception):
    """An error to print as `error: <message>` with exit code 1."""


class Target:
    """Where to act: the namespace, the cluster's address and a client for it: the light
    REST client when the kubeconfig allows (rest.py), else the kubernetes client."""

    def __init__(
        self,
        namespace: str,
        server: str,
        rest: Rest | None = None,
        api: Any = None,  # kubernetes.client.ApiClient, when `rest` cannot serve the kubeconfig
    ) -> None:
        self.namespace = namespace
        self.server = server
        self.rest = rest
        self.api = api

    def __repr__(self) -> str:
        return f"Target({self.namespace!r}, {self.server!r})"

    def in_namespace(self, namespace: str) -> Target:
        """The same cluster and client, acting in `namespace`."""
        return Target(namespace, self.server, self.rest, self.api)

    @property
    def custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.api)

    def path(self, plural: str, name: str | None = None, namespace: str | None = "") -> str:
        """The object's (or collection's) path; namespace None: every namespace."""
        ns = self.namespace if namespace == "" else namespace
        where = f"/namespaces/{ns}" if ns else ""
        return f"/apis/{GROUP}/{VERSION}{where}/{plural}" + (f"/{name}" if name else "")

    def get(self, plural: str, name: str) -> dict[str, Any]:
        if self.rest is not None:
            return self.rest.request("GET", self.path(plural, name), timeout=REQUEST_TIMEOUT)
        return kube_call(
            self.custom.get_namespaced_custom_object, GROUP, VERSION, self.namespace, plural, name
        )

    def list(self, plural: str, namespace: str | None = "") -> dict[str, Any]:
        ns = self.namespace if namespace == "" else namespace
        if self.rest is not None:
            path = self.path(plural, namespace=ns)
            return self.rest.request("GET", path, timeout=REQUEST_TIMEOUT)
        if ns:
            return kube_call(self.custom.list_namespaced_custom_object, GROUP, VERSION, ns, plural)
        return kube_call(self.custom.list_cluster_custom_object, GROUP, VERSION, plural)

    def patch(self, plural: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.rest is not None:
            path = self.path(plural, name)
            return self.rest.request("PATCH", path, body, timeout=REQUEST_TIMEOUT)
        return kube_call(
            self.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            plural,
            name,
            body,
        )


def kube_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """A kubernetes client call, its errors turned into those of the light client (RestError
    for an answer, OSError when the cluster cannot be reached)."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        result: dict[str, Any] = fn(*args, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        return result
    except ApiException as err:
        raise RestError(err.status or 0, str(err.reason or ""), err.body or "") from None
    except HTTPError as err:
        raise ConnectionError(str(err)) from None


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--namespace", help="namespace (default: the context's)")
    parser.add_argument("--context", help="kubeconfig context to use (default: current)")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: KUBECONFIG or ~/.kube)")


def add_global_connection_flags(parser: argparse.ArgumentParser) -> None:
    """The same flags before the subcommand (`kubectl lockgate -n prod status x`), kept under
    other names: argparse lets a subcommand's defaults overwrite the top level's values."""
    import argparse

    parser.add_argument("-n", "--namespace", dest="global_namespace", help=argparse.SUPPRESS)
    parser.add_argument("--context", dest="global_context", help=argparse.SUPPRESS)
    parser.add_argument("--kubeconfig", dest="global_kubeconfig", help=argparse.SUPPRESS)


def _merge_global_flags(args: argparse.Namespace) -> None:
    for name in ("namespace", "context", "kubeconfig"):
        if getattr(args, name, None) is None:
            setattr(args, name, getattr(args, f"global_{name}", None))


def connect(args: argparse.Namespace, *, light: bool = True) -> Target:
    """A client from the kubeconfig (or the Pod's service account when there is none): the
    light one when it can serve the kubeconfig and `light`, else the kubernetes client."""
    try:
        rest = light_client(args.kubeconfig, args.context) if light else None
    except CredentialError as err:
        raise PluginError(str(err)) from None
    if rest is not None:
        namespace = args.namespace or rest.namespace or "default"
        return Target(namespace, rest.host, rest=rest)
    from kubernetes import client, config

    kubeconfig = args.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
    configuration = client.Configuration()
    namespace = args.namespace
    try:
        config.load_kube_config(
            config_file=kubeconfig, context=args.context, client_configuration=configuration
        )
        if namespace is None:
            contexts, current = config.list_kube_config_contexts(config_file=kubeconfig)
            chosen = current
            if args.context:
                chosen = next((c for c in contexts if c.get("name") == args.context), current)
            namespace = ((chosen or {}).get("context") or {}).get("namespace")
    except config.ConfigException as err:
        in_pod = os.environ.get("KUBERNETES_SERVICE_HOST") and not (args.kubeconfig or args.context)
        if not in_pod:
            raise PluginError(
                f"no cluster configured: {err} (kubeconfig {kubeconfig}; set KUBECONFIG, "
                "--kubeconfig or --context)"
            ) from None
        config.load_incluster_config(client_configuration=configuration)
        if namespace is None and os.path.exists(SERVICE_ACCOUNT_NS):
            with open(SERVICE_ACCOUNT_NS, encoding="utf-8") as handle:
                namespace = handle.read().strip()
    except (OSError, ValueError) as err:
        raise PluginError(f"cannot read kubeconfig {kubeconfig}: {err}") from None
    configuration.retries = 0  # an unreachable cluster is reported at once, not after backoff
    return Target(namespace or "default", configuration.host, api=client.ApiClient(configuration))


def _server_message(err: Any) -> str:
    try:
        body = json.loads(err.body or "{}")
    except (TypeError, ValueError):
        return str(err.reason or "")
    return str(body.get("message") or err.reason or "")


def call(target: Target, verb: str, resource: str, name: str | None, fn: Callable[[], T]) -> T:
    """Run one API call; turn what can go wrong into a PluginError that says what and where
    (a conflict, 409, is raised as it is: the caller retries)."""
    try:
        return fn()
    except RestError as err:
        if err.status == 409:
            raise
        raise explain(target, verb, resource, name, err) from None
    except OSError as err:
        raise PluginError(f"cannot reach the cluster at {target.server}: {err}") from None


def explain(target: Target, verb: str, resource: str, name: str | None, err: Any) -> PluginError:
    """The PluginError for an error answer (RestError or the kubernetes client's
    ApiException) of `verb` on `resource`: not found, forbidden (naming the verb, the
    resource and what the API server said), unauthorized, other."""
    message = _server_message(err)
    where = f'in namespace "{target.namespace}"' if target.namespace else "in all namespaces"
    if err.status == 404:
        if name is not None and f'"{name}" not found' in message:
            return PluginError(f'{resource} "{name}" not found {where}')
        return PluginError(
            f"{resource} is not served by this cluster: are lockgate's CRDs installed? ({message})"
        )
    if err.status == 403:
        return PluginError(
            f"forbidden: no permission to {verb} {resource} {where}. The API server said: {message}"
        )
    if err.status == 401:
        return PluginError(
            f"unauthorized: the cluster at {target.server} did not accept the credentials "
            "of the current context (expired token?)"
        )
    return PluginError(f"{verb} {resource} failed ({err.status}): {message}")


def get_deployment(target: Target, name: str) -> dict[str, Any]:
    resource = "deployments.lockgate.dev"
    return call(target, "get", resource, name, lambda: target.get("deployments", name))


def patch_deployment(
    target: Target, name: str, check: Callable[[dict[str, Any]], str | None], body: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Patch after `check` passes on the object as it is now; the patch carries the
    resourceVersion read, so a change in between (a phase change) is re-checked, not raced."""
    for _ in range(8):
        before = get_deployment(target, name)
        problem = check(before)
        if problem:
            raise PluginError(problem)
        patch = json.loads(json.dumps(body))
        patch.setdefault("metadata", {})["resourceVersion"] = before["metadata"]["resourceVersion"]
        try:
            after = call(
                target,
                "patch",
                "deployments.lockgate.dev",
                name,
                functools.partial(target.patch, "deployments", name, patch),
            )
            return before, after
        except RestError as err:
            if err.status != 409:
                raise
            time.sleep(0.1)
    raise PluginError(f"{name} kept changing while being patched; try again")


def _log_after(before: dict[str, Any], now: dict[str, Any]) -> list[dict[str, Any]]:
    """Log entries of `now` that were not in `before` (the log is bounded: match by content)."""
    old = (before.get("status") or {}).get("log") or []
    new = (now.get("status") or {}).get("log") or []
    if not old:
        return list(new)
    last = (old[-1].get("at"), old[-1].get("message"))
    for i in range(len(new) - 1, -1, -1):
        if (new[i].get("at"), new[i].get("message")) == last:
            return list(new[i + 1 :])
    return list(new)


def request_action(target: Target, name: str, action: str) -> dict[str, Any]:
    """Set the one-shot action annotation (promote, promote-full, abort, retry) once
    `refusal` passes on the object as it is now; the object as it was before. Used by the
    plugin's commands and by the dashboard."""
    app_spec: dict[str, Any] | None = None
    if action == "promote":
        current = get_deployment(target, name)
        app_spec = get_application_spec(target, (current.get("spec") or {}).get("application", ""))
    before, _ = patch_deployment(
        target,
        name,
        lambda obj: refusal(action, obj, step_kinds(app_spec, obj)),
        {"metadata": {"annotations": {ACTION_ANNOTATION: action}}},
    )
    return before


def request_pause(target: Target, name: str, pause: bool) -> dict[str, Any]:
    """Set spec.paused (pause) or clear it (resume) once `refusal` passes; the object after."""
    _, after = patch_deployment(
        target,
        name,
        lambda obj: refusal("pause" if pause else "resume", obj),
        {"spec": {"paused": pause}},
    )
    return after


def action_command(args: argparse.Namespace, action: str) -> int:
    target = connect(args)
    name = args.name
    before = request_action(target, name, action)
    shown = "promote --full" if action == "promote-full" else action
    phase = (before.get("status") or {}).get("phase") or "Pending"
    print(f"{shown} requested for {name} (it was {phase})")
    if args.no_wait:
        return 0
    deadline = time.monotonic() + args.wait_seconds
    while time.monotonic() < deadline:
        now = get_deployment(target, name)
        consumed = ACTION_ANNOTATION not in ((now["metadata"].get("annotations")) or {})
        if consumed and not (now.get("status") or {}).get("pendingAction"):
            ignored = False
            for entry in _log_after(before, now):
                print(f"  {entry.get('level', 'Info')}: {entry.get('message', '')}")
                ignored = ignored or f"action {action} ignored" in entry.get("message", "")
            status = now.get("status") or {}
            print(f"{name} is {status.get('phase', 'Pending')}: {status.get('message', '')}")
            return 1 if ignored else 0
        time.sleep(0.3)
    print(
        f"the operator has not taken the action within {args.wait_seconds:g}s "
        "(is it running?); it stays on the object and is applied when the operator runs",
        file=sys.stderr,
    )
    return 0


def pause_command(args: argparse.Namespace, pause: bool) -> int:
    target = connect(args)
    name = args.name
    after = request_pause(target, name, pause)
    print(f"{name}: spec.paused set to {str(pause).lower()}")
    if args.no_wait:
        return 0
    generation = after["metadata"].get("generation", 0)
    deadline = time.monotonic() + args.wait_seconds
    while time.monotonic() < deadline:
        now = get_deployment(target, name)
        status = now.get("status") or {}
        if (status.get("observedGeneration") or 0) >= generation:
            print(f"{name} is {status.get('phase', 'Pending')}: {status.get('message', '')}")
            return 0
        time.sleep(0.3)
    print(
        f"the operator has not observed the change within {args.wait_seconds:g}s (is it running?)",
        file=sys.stderr,
    )
    return 0


def get_application_spec(target: Target, name: str) -> dict[str, Any] | None:
    """The Application's spec, or None when it cannot be read (missing, forbidden): the
    progress view then goes without the step list."""
    try:
        app = call(
            target,
            "get",
            "applications.lockgate.dev",
            name,
            lambda: target.get("applications", name),
        )
    except PluginError:
        return None
    spec: dict[str, Any] | None = app.get("spec")
    return spec


def step_descriptions(app_spec: dict[str, Any] | None, obj: dict[str, Any]) -> list[str] | None:
    """Every step of the rollout as the operator compiled it (the same pure engine code)."""
    steps = plan_steps(app_spec, obj)
    return None if steps is None else [step.description for step in steps]


def step_kinds(app_spec: dict[str, Any] | None, obj: dict[str, Any]) -> list[tuple[str, bool]]:
    """(kind, analysis gate) of every step, for the promote check; empty when unknown."""
    return [(step.kind, step.gate) for step in plan_steps(app_spec, obj) or []]


def plan_steps(app_spec: dict[str, Any] | None, obj: dict[str, Any]) -> list[Any] | None:
    if app_spec is None:
        return None
    from pydantic import ValidationError

    from lockgate.api import ApplicationSpec, DeploymentSpec
    from lockgate.engine import compile_plan

    try:
        plan = compile_plan(
            ApplicationSpec.model_validate(app_spec),
            DeploymentSpec.model_validate(obj.get("spec") or {}),
            has_stable=bool((obj.get("status") or {}).get("previousImage")),
        )
    except (ValidationError, ValueError):
        return None
    return list(plan.steps)


def status_command(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from .kubectl_view import render_status

    target = connect(args)
    obj = get_deployment(target, args.name)
    app_spec = get_application_spec(target, (obj.get("spec") or {}).get("application", ""))

    def view(obj: dict[str, Any]) -> str:
        return render_status(
            obj,
            datetime.now(UTC),
            log_lines=args.log_lines,
            steps=step_descriptions(app_spec, obj),
            app_spec=app_spec,
        )

    if not args.watch:
        print(view(obj))
        return 0
    tty = sys.stdout.isatty()
    deadline = time.monotonic() + args.timeout if args.timeout > 0 else None
    shown_version = None
    shown_text = ""
    try:
        while True:
            phase = (obj.get("status") or {}).get("phase")
            version = obj["metadata"].get("resourceVersion")
            text = view(obj)
            if tty and text != shown_text:
                sys.stdout.write("\x1b[H\x1b[2J" + text + "\n")
                sys.stdout.flush()
            elif not tty and version != shown_version:
                if shown_version is not None:
                    print("-" * 60)
                print(text, flush=True)
            shown_version, shown_text = version, text
            if phase in TERMINAL:
                return 0 if phase == "Succeeded" else 1
            if deadline is not None and time.monotonic() > deadline:
                print(f"error: still {phase} after {args.timeout:g}s", file=sys.stderr)
                return 1
            time.sleep(args.interval)
            obj = get_deployment(target, args.name)
    except KeyboardInterrupt:
        print()
        return 0


def history_command(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from .kubectl_view import render_history

    target = connect(args)
    app = call(
        target,
        "get",
        "applications.lockgate.dev",
        args.app,
        lambda: target.get("applications", args.app),
    )
    listed = call(
        target, "list", "deployments.lockgate.dev", None, lambda: target.list("deployments")
    )
    print(render_history(app, listed.get("items") or [], datetime.now(UTC)))
    return 0


def add_subcommands(sub: Any) -> None:
    """Register the plugin's subcommands on the `lockgate` / `kubectl lockgate` parser."""
    status = sub.add_parser("status", help="progress of a Deployment (lgd)")
    status.add_argument("name", help="Deployment name")
    status.add_argument(
        "-w",
        "--watch",
        action="store_true",
        help="redraw on every change until the rollout finishes (exit 0 Succeeded, 1 otherwise)",
    )
    status.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
    status.add_argument(
        "--timeout", type=float, default=3600.0, help="give up watching after (0: never)"
    )
    status.add_argument("--log-lines", type=int, default=8, help="recent log lines shown")
    add_connection_flags(status)

    for action, text in (
        ("promote", "move a rollout past its current pause or analysis gate"),
        ("abort", "stop a rollout and roll back to the previous version"),
        ("retry", "start a RolledBack, Aborted or Failed rollout again"),
    ):
        parser = sub.add_parser(action, help=text)
        parser.add_argument("name", help="Deployment name")
        if action == "promote":
            parser.add_argument(
                "--full", action="store_true", help="skip every remaining pause and gate"
            )
        _wait_flags(parser)
        add_connection_flags(parser)
    for verb, text in (
        ("pause", "hold a rollout where it is (sets spec.paused)"),
        ("resume", "continue a paused rollout (clears spec.paused)"),
    ):
        parser = sub.add_parser(verb, help=text)
        parser.add_argument("name", help="Deployment name")
        _wait_flags(parser)
        add_connection_flags(parser)
    history = sub.add_parser("history", help="finished and current Deployments of an Application")
    history.add_argument("app", help="Application name")
    add_connection_flags(history)
    # The dashboard's flags are here, not in its module: parsing an action's arguments
    # should not load the dashboard.
    dashboard = sub.add_parser("dashboard", help="a local web UI of rollouts, live, with actions")
    dashboard.add_argument(
        "-A", "--all-namespaces", action="store_true", help="show every namespace you may list"
    )
    dashboard.add_argument("--port", type=int, default=3100, help="port to listen on (0: any)")
    dashboard.add_argument(
        "--address",
        default="127.0.0.1",
        help="address to listen on (default loopback; anything else prints a warning)",
    )
    add_connection_flags(dashboard)


def _wait_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait-seconds",
        type=float,
        default=10.0,
        help="how long to wait for the operator to act, to print what it did",
    )
    parser.add_argument("--no-wait", action="store_true", help="return once the request is set")


COMMANDS = frozenset(
    {"status", "promote", "abort", "retry", "pause", "resume", "history", "dashboard"}
)


def run(args: argparse.Namespace) -> int:
    _merge_global_flags(args)
    try:
        if args.command == "status":
            return status_command(args)
        if args.command == "history":
            return history_command(args)
        if args.command == "dashboard":
            from .dashboard import dashboard_command

            return dashboard_command(args)
        if args.command in ("pause", "resume"):
            return pause_command(args, args.command == "pause")
        action = "promote-full" if args.command == "promote" and args.full else args.command
        return action_command(args, action)
    except PluginError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 1
