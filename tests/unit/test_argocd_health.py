"""Argo CD health checks (deploy/argocd/health-*.lua): the decision table, run through a real
Lua 5.4 interpreter the way Argo CD runs them (a global `obj`, the script returns `hs`).

The table is checked in Python (documenting the intended mapping) and through `lua5.4` (Debian
package lua5.4, which hack/test installs): without the interpreter these tests fail, saying so."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
LUA = shutil.which("lua5.4") or shutil.which("lua")


def lua_literal(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string with \" \\ \n \uXXXX escapes is valid Lua
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"[{json.dumps(k)}] = {lua_literal(v)}" for k, v in value.items()) + "}"
        )
    raise TypeError(value)


def run_lua(script: str, obj: dict[str, Any]) -> tuple[str, str]:
    # Not a skip: hack/test installs the interpreter, so a missing one is a broken setup.
    assert LUA is not None, "no Lua interpreter: apt-get install lua5.4 (as hack/test does)"
    harness = (
        f"obj = {lua_literal(obj)}\n"
        f"local hs = dofile({json.dumps(str(ROOT / 'deploy/argocd' / script))})\n"
        'io.write(hs.status, "\\n", hs.message or "")\n'
    )
    proc = subprocess.run([LUA, "-"], input=harness, capture_output=True, text=True, timeout=10)
    assert proc.returncode == 0, proc.stderr
    status, _, message = proc.stdout.partition("\n")
    return status, message


def obj(
    phase: str | None, generation: int = 2, observed: int | None = 2, **status: Any
) -> dict[str, Any]:
    out: dict[str, Any] = {"metadata": {"name": "x", "generation": generation}}
    if phase is not None:
        out["status"] = {"phase": phase, "observedGeneration": observed, **status}
    return out


DEPLOYMENT_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("no status yet", obj(None), "Progressing", "waiting for the lockgate operator"),
    ("stale generation", obj("Succeeded", 3, 2), "Progressing", "observe generation 3"),
    ("never observed", obj("Succeeded", 1, None), "Progressing", "observe generation 1"),
    ("succeeded", obj("Succeeded", message="rolled out shop:2"), "Healthy", "rolled out shop:2"),
    ("pending", obj("Pending"), "Progressing", "Pending"),
    ("queued", obj("Queued", message="waiting for shop-v1"), "Progressing", "waiting for shop-v1"),
    (
        "progressing with step",
        obj(
            "Progressing",
            message="rolling out",
            step={"index": 2, "total": 9, "description": "setWeight 10"},
        ),
        "Progressing",
        "Progressing at step 3/9 (setWeight 10): rolling out",
    ),
    (
        "paused for promote",
        obj("Paused", message="waiting for promote at step 4"),
        "Suspended",
        "waiting for promote at step 4",
    ),
    ("rolling back", obj("RollingBack"), "Progressing", "RollingBack"),
    ("rolled back", obj("RolledBack", message="analysis failed"), "Degraded", "analysis failed"),
    ("failed", obj("Failed"), "Degraded", "Failed"),
    ("aborted", obj("Aborted"), "Degraded", "Aborted"),
    ("future phase", obj("Exploding"), "Unknown", "Exploding"),
]

APPLICATION_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("no status yet", obj(None), "Progressing", "waiting for the lockgate operator"),
    ("stale generation", obj("Healthy", 4, 3), "Progressing", "observe generation 4"),
    ("healthy", obj("Healthy", message="4/4 ready"), "Healthy", "4/4 ready"),
    (
        "progressing",
        obj("Progressing", message="1/4 updated", activeDeployment="shop-v2"),
        "Progressing",
        "rolling out by shop-v2: 1/4 updated",
    ),
    ("degraded", obj("Degraded", message="2/4 ready"), "Degraded", "2/4 ready"),
    (
        "no version yet",
        obj("Unknown", message="no version deployed yet: create a Deployment"),
        "Progressing",
        "no version deployed yet",
    ),
    ("future phase", obj("Exploding"), "Unknown", "Exploding"),
]

# The intended mapping of a (current-generation) phase to an Argo CD health status.
DEPLOYMENT_TABLE = {
    "Pending": "Progressing",
    "Queued": "Progressing",
    "Progressing": "Progressing",
    "RollingBack": "Progressing",
    "Paused": "Suspended",
    "Succeeded": "Healthy",
    "RolledBack": "Degraded",
    "Failed": "Degraded",
    "Aborted": "Degraded",
}


def test_the_table_covers_every_deployment_phase_of_the_api() -> None:
    from typing import get_args

    from lockgate.api.deployment import Phase

    assert set(DEPLOYMENT_TABLE) == set(get_args(Phase))
    covered = {case[1]["status"]["phase"] for case in DEPLOYMENT_CASES if "status" in case[1]}
    assert set(DEPLOYMENT_TABLE) <= covered
    for _, o, expected, _ in DEPLOYMENT_CASES:
        status = o.get("status") or {}
        current = (status.get("observedGeneration") or 0) >= o["metadata"]["generation"]
        if status.get("phase") in DEPLOYMENT_TABLE and current:
            assert DEPLOYMENT_TABLE[status["phase"]] == expected


@pytest.mark.parametrize(
    ("case", "o", "status", "message"), DEPLOYMENT_CASES, ids=[c[0] for c in DEPLOYMENT_CASES]
)
def test_deployment_health(case: str, o: dict[str, Any], status: str, message: str) -> None:
    got_status, got_message = run_lua("health-deployment.lua", o)
    assert got_status == status
    assert message in got_message


@pytest.mark.parametrize(
    ("case", "o", "status", "message"), APPLICATION_CASES, ids=[c[0] for c in APPLICATION_CASES]
)
def test_application_health(case: str, o: dict[str, Any], status: str, message: str) -> None:
    got_status, got_message = run_lua("health-application.lua", o)
    assert got_status == status
    assert message in got_message


def test_a_real_finished_deployment_object_is_healthy() -> None:
    """A status as the operator writes it (every field present, many nested)."""
    real = obj(
        "Succeeded",
        1,
        1,
        message="rolled out demo:v2",
        step={"index": 8, "total": 9, "description": "done", "analysisPassed": False},
        weights={"stable": 100, "canary": 0},
        batches=[],
        analysis=[{"step": 5, "verdict": "Passed", "canary": {"requests": 3117, "errorRate": 0}}],
        conditions=[{"type": "Ready", "status": "True", "reason": "Succeeded"}],
        log=[{"at": "2026-11-23T14:05:31Z", "level": "Info", "message": 'quote " and \\ ok'}],
    )
    assert run_lua("health-deployment.lua", real) == ("Healthy", "rolled out demo:v2")
