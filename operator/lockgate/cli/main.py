"""Entry point of `lockgate` and of the kubectl plugin `kubectl-lockgate` (`kubectl lockgate`):
one parser, so `lockgate status NAME` and `kubectl lockgate status NAME` are the same."""

from __future__ import annotations

import argparse
import os
import sys

from lockgate import __version__

# Only what parsing needs is imported here: `kubectl lockgate abort` runs this module on its
# way to the API server (tests/unit/test_footprint.py guards what that path loads).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any


def exact_namespace(value: str) -> str:
    """The operator serves exact namespace names (see run_operator), never kopf's patterns."""
    import re

    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a namespace name")
    return value


def positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive number of seconds")
    return seconds


def a_path(value: str) -> Path:
    from pathlib import Path

    return Path(value)


def shard_name(value: str) -> str:
    """`--shard`: a label value that can also name the shard's Lease and finalizer."""
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


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, told the terminal's width: by itself it asks shutil, whose
    import (with zlib, bz2 and lzma) is a good part of parsing an action's arguments, as
    argparse makes a formatter for every argument it adds."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        super().__init__(prog, indent_increment, max_help_position, width or _columns() - 2)


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


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose formatter is _Formatter (subcommands' parsers are made of the
    same class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    invoked = os.path.basename(sys.argv[0]) if sys.argv else ""
    parser = _Parser(
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
    from lockgate.controller.process import OperatorOptions, run
    from lockgate.election import Timing

    if args.notifications_file:
        os.environ["LOCKGATE_NOTIFICATIONS_FILE"] = args.notifications_file
    if args.shard is not None:
        os.environ["LOCKGATE_SHARD"] = args.shard
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
