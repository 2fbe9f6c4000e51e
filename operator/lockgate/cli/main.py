"""Entry point of `lockgate` and of the kubectl plugin `kubectl-lockgate` (`kubectl lockgate`):
one parser, so `lockgate status NAME` and `kubectl lockgate status NAME` are the same."""

from __future__ import annotations

import os
import sys

from lockgate import __version__

# Nothing more is imported here: `kubectl lockgate abort` runs this module on its way to the
# API server (tests/unit/test_footprint.py guards what that path loads), and its common forms
# are parsed without argparse (quick_action).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from pathlib import Path
    from typing import Any


def exact_namespace(value: str) -> str:
    """The operator serves exact namespace names (see run_operator), never kopf's patterns."""
    import argparse
    import re

    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a namespace name")
    return value


def positive_seconds(value: str) -> float:
    import argparse

    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive number of seconds")
    return seconds


def positive_whole(value: str) -> int:
    import argparse

    number = int(value) if value.isdigit() else 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive whole number")
    return number


def a_path(value: str) -> Path:
    from pathlib import Path

    return Path(value)


def shard_name(value: str) -> str:
    """`--shard`: a label value that can also name the shard's Lease and finalizer."""
    import argparse

    from lockgate.names import shard_name_problem

    problem = shard_name_problem(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return value


def lease_name(args: argparse.Namespace) -> str:
    """`--lease-name`, else one Lease per shard: `lockgate`, or `lockgate-SHARD`."""
    name: str | None = args.lease_name
    if name:
        return name
    return "lockgate" if not args.shard else f"lockgate-{args.shard}"


_COLUMNS: list[int] = []


def _columns() -> int:
    """The terminal's width as shutil.get_terminal_size says it: $COLUMNS, else stdout's
    terminal, else 80 (asked once: argparse makes a formatter for every argument)."""
    if not _COLUMNS:
        _COLUMNS.append(_ask_columns())
    return _COLUMNS[0]


def _ask_columns() -> int:
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def _parser_class() -> type[argparse.ArgumentParser]:
    """An ArgumentParser whose formatter is told the terminal's width: by itself argparse
    asks shutil, whose import (with zlib, bz2 and lzma) was a good part of parsing an
    action's arguments, as it makes a formatter for every argument it adds. Subcommands'
    parsers are made of the same class."""
    import argparse

    class Formatter(argparse.HelpFormatter):
        def __init__(
            self,
            prog: str,
            indent_increment: int = 2,
            max_help_position: int = 24,
            width: int | None = None,
        ) -> None:
            width = width or _columns() - 2
            super().__init__(prog, indent_increment, max_help_position, width)

    class Parser(argparse.ArgumentParser):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("formatter_class", Formatter)
            super().__init__(*args, **kwargs)

    return Parser


# The plugin's actions in their common forms, parsed without argparse (whose import, with
# gettext and locale, and the parser of every subcommand took a tenth of an action's CPU):
# `ACTION NAME` with the flags below, each once, in any order. Anything else (help, another
# command, abbreviations, `--flag=value`, global flags before the action, a value that
# starts with `-`) goes to argparse; tests/unit/test_kubectl_plugin.py checks on generated
# command lines that both give the same arguments.
QUICK_ACTIONS = frozenset({"promote", "abort", "retry", "pause", "resume"})
QUICK_VALUES = {
    "-n": "namespace",
    "--namespace": "namespace",
    "--context": "context",
    "--kubeconfig": "kubeconfig",
    "--wait-seconds": "wait_seconds",
}


def quick_action(argv: list[str]) -> argparse.Namespace | None:
    """What build_parser().parse_args(argv) returns, for an action's common forms; None
    for anything else."""
    if not argv or argv[0] not in QUICK_ACTIONS:
        return None
    command = argv[0]
    values: dict[str, Any] = {
        "command": command,
        "name": None,
        "wait_seconds": 10.0,
        "no_wait": False,
        "namespace": None,
        "context": None,
        "kubeconfig": None,
        "global_namespace": None,
        "global_context": None,
        "global_kubeconfig": None,
    }
    if command == "promote":
        values["full"] = False
    seen: set[str] = set()
    i = 1
    while i < len(argv):
        token = argv[i]
        if token in QUICK_VALUES:
            dest = QUICK_VALUES[token]
            if dest in seen or i + 1 >= len(argv) or argv[i + 1].startswith("-"):
                return None
            value: Any = argv[i + 1]
            if dest == "wait_seconds":
                try:
                    value = float(value)
                except ValueError:
                    return None
                if value != value:  # NaN: not a number of seconds to wait
                    return None
            values[dest] = value
            seen.add(dest)
            i += 2
            continue
        if token == "--no-wait" or (token == "--full" and command == "promote"):
            dest = token[2:].replace("-", "_")
            if dest in seen:
                return None
            values[dest] = True
            seen.add(dest)
        elif token.startswith("-") or values["name"] is not None:
            return None
        else:
            values["name"] = token
        i += 1
    if values["name"] is None:
        return None
    from types import SimpleNamespace

    # (attributes read as an argparse.Namespace's are read)
    return SimpleNamespace(**values)  # type: ignore[return-value]


def build_parser() -> argparse.ArgumentParser:
    invoked = os.path.basename(sys.argv[0]) if sys.argv else ""
    parser = _parser_class()(
        prog="kubectl lockgate" if invoked == "kubectl-lockgate" else "lockgate",
        description="Progressive delivery for Kubernetes and Docker hosts.",
    )
    parser.add_argument("--version", action="version", version=f"lockgate {__version__}")
    from .kubectl import add_global_connection_flags

    add_global_connection_flags(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    plan = sub.add_parser(
        "plan",
        help="print the steps a Deployment will go through, without touching any cluster",
    )
    plan.add_argument(
        "-f",
        "--filename",
        dest="files",
        action="append",
        type=a_path,
        required=True,
        help="a Deployment manifest, and optionally its Application (repeatable)",
    )
    operator = sub.add_parser(
        "operator", help="run the operator (kopf) against the current cluster"
    )
    scope = operator.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        type=exact_namespace,
        help="watch this namespace (an exact name; repeatable)",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    operator.add_argument(
        "--liveness", default="http://0.0.0.0:8080/healthz", help="kopf health endpoint URL"
    )
    election = operator.add_argument_group(
        "leader election",
        "A hot standby: with --leader-elect only the holder of a coordination.k8s.io/v1 "
        "Lease acts; the others wait, warm, and take over when it is released or expires "
        "(docs/high-availability.md). Durations in seconds, controller-runtime's defaults.",
    )
    election.add_argument(
        "--leader-elect",
        action="store_true",
        help="act only while holding the Lease (off by default; on in the chart and manifests)",
    )
    election.add_argument(
        "--lease-name",
        default=None,
        help="the Lease's name (default: lockgate, or lockgate-SHARD with --shard: each shard "
        "elects its own leader)",
    )
    election.add_argument(
        "--lease-namespace",
        default=None,
        help="the Lease's namespace (default: $POD_NAMESPACE, else the first -n namespace, "
        "else default)",
    )
    election.add_argument(
        "--lease-duration",
        type=positive_seconds,
        default=15.0,
        help="how long a standby waits after the last renewal it saw before taking over "
        "(default: 15)",
    )
    election.add_argument(
        "--renew-deadline",
        type=positive_seconds,
        default=10.0,
        help="how long the leader tries to renew before it gives up and exits (default: 10)",
    )
    election.add_argument(
        "--retry-period",
        type=positive_seconds,
        default=2.0,
        help="how often the leader renews (default: 2)",
    )
    operator.add_argument(
        "--shard",
        default=None,
        type=shard_name,
        help="serve only the Applications labelled lockgate.dev/shard=SHARD (and their "
        "Deployments); without it, those without the label (sets LOCKGATE_SHARD)",
    )
    operator.add_argument(
        "--api-threads",
        type=positive_whole,
        default=None,
        metavar="N",
        help="worker threads for API calls, connections kept to the API server, and rollout "
        "rounds in progress at once (default: 64; docs/scale.md; sets LOCKGATE_API_THREADS)",
    )
    operator.add_argument(
        "--notifications-file",
        default=None,
        help="YAML/JSON list of notification targets every Application gets "
        "(sets LOCKGATE_NOTIFICATIONS_FILE)",
    )
    from .kubectl import add_subcommands

    add_subcommands(sub)
    return parser


def wait_for_crds() -> None:
    """Until the API serves lockgate's Applications and Deployments (the CRDs may be applied
    in the same breath as the operator)."""
    import time

    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from lockgate.kube import load_config
    from lockgate.names import GROUP, VERSION

    custom = client.CustomObjectsApi(load_config())
    waited = 0
    while True:
        try:
            found = custom.get_api_resources(GROUP, VERSION)
            if {"applications", "deployments"} <= {r.name for r in found.resources or []}:
                return
        except ApiException as err:
            if err.status != 404:
                raise
        if waited % 10 == 0:
            print(
                f"waiting for the API to serve {GROUP}/{VERSION} (lockgate's CRDs)", file=sys.stderr
            )
        time.sleep(1)
        waited += 1


def run_operator(args: argparse.Namespace) -> int:
    import kopf

    import lockgate.controller  # noqa: F401  (registers the handlers)
    from lockgate import heap
    from lockgate.controller.process import OperatorOptions, run
    from lockgate.election import Timing

    if args.notifications_file:
        os.environ["LOCKGATE_NOTIFICATIONS_FILE"] = args.notifications_file
    if args.shard is not None:
        os.environ["LOCKGATE_SHARD"] = args.shard
    if args.api_threads is not None:
        os.environ["LOCKGATE_API_THREADS"] = str(args.api_threads)
    election = None
    if args.leader_elect:
        from lockgate.controller.leader import ElectionConfig, default_identity, lease_namespace

        try:
            timing = Timing(args.lease_duration, args.renew_deadline, args.retry_period)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        election = ElectionConfig(
            name=lease_name(args),
            namespace=lease_namespace(args.lease_namespace, args.namespace),
            identity=default_identity(),
            timing=timing,
        )
    heap.limit_arenas()  # before any thread: every API thread would grow an arena of its own
    kopf.configure(verbose=False)
    settings = kopf.OperatorSettings()
    clusterwide = args.all_namespaces or not args.namespace
    if not clusterwide:
        # kopf drops a namespace from its watches as soon as the namespace is terminating
        # and none of its conditions blocks (and never adds one that is terminating when the
        # operator starts), so the finalizers on lockgate objects in it would never be
        # removed and the namespace would hang in Terminating. The namespaces named here are
        # exact names: serve them for as long as the operator runs, whatever their state.
        # Without scanning, kopf serves only the resources it finds at start: wait for them.
        settings.scanning.disabled = True
    return run(
        OperatorOptions(
            clusterwide=clusterwide,
            namespaces=args.namespace,
            liveness=args.liveness,
            settings=settings,
            election=election,
            # A standby checks them while it waits, so it takes over ready to act.
            check_crds=wait_for_crds if (not clusterwide or election) else None,
        )
    )


# Commands that make a few calls and exit: they run without the cyclic garbage collector,
# which otherwise spends a tenth of an action's CPU walking the objects its imports made
# (perf: gc_collect_main, visit_decref), and, run as a program, end without the
# interpreter's finalization (tearing down every module and the TLS context took longer
# than the action's own calls). Anything long-running (the operator, the dashboard,
# `status -w`) has the collector back before it starts.
ONE_SHOT = frozenset({"promote", "abort", "retry", "pause", "resume", "history", "status"})


def main(argv: list[str] | None = None) -> int:
    """The command line `argv` (default: the program's own arguments); its exit code."""
    import gc

    collecting = gc.isenabled()
    gc.disable()
    try:
        args = quick_action(sys.argv[1:] if argv is None else argv)
        if args is None:
            args = build_parser().parse_args(argv)
        long_running = args.command not in ONE_SHOT or getattr(args, "watch", False)
        if long_running and collecting:
            gc.enable()
        code = _dispatch(args)
    finally:
        if collecting:
            gc.enable()
    if argv is None and not long_running:
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """End the process as the program `kubectl-lockgate` (never a caller of main(argv)):
    what it printed flushed, nothing else left to do (no atexit handler on this path)."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return  # a closed pipe: the interpreter's own exit reports it as it always does
    os._exit(code)


def _dispatch(args: argparse.Namespace) -> int:
    from .kubectl import COMMANDS, run

    if args.command in COMMANDS:
        return run(args)
    if args.command == "operator":
        return run_operator(args)
    if args.command == "plan":
        from lockgate.api import InvalidManifest

        from .plan import plan_command

        try:
            print(plan_command(args.files))
        except InvalidManifest as err:
            print(f"error: {err.source}:", file=sys.stderr)
            for problem in err.problems:
                print(f"  {problem}", file=sys.stderr)
            return 2
        except OSError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
