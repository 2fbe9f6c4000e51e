"""Entry point of `lockgate` (and, for now, `kubectl-lockgate`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lockgate import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lockgate", description="Progressive delivery for Kubernetes and Docker hosts."
    )
    parser.add_argument("--version", action="version", version=f"lockgate {__version__}")
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
        type=Path,
        required=True,
        help="a Deployment manifest, and optionally its Application (repeatable)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
