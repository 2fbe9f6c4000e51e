"""The judge of the kill test and the chaos soak (tests/support/kills.py) on statuses the
engine itself wrote: a clean walk passes; a step recorded twice or left out, or an end that
is not what the image dictates, is named."""

from __future__ import annotations

from typing import Any

import pytest

from hack.tools.load import Response
from tests.support.fakeworld import Driver, FakeWorld, app_spec, dep_spec
from tests.support.kills import Position, expected_phase, step_problems, unexpected_failures

CANARY = {"type": "Canary", "canary": {"steps": [25, 50, 100], "stepSeconds": 3}}
ROLLING = {"type": "Rolling", "rolling": {"batchSize": 1}}
ANALYSIS = {"intervalSeconds": 2, "minRequests": 5, "maxConsecutiveFailures": 1}


def walked(image: str, strategy: dict[str, Any], **world: Any) -> dict[str, Any]:
    """The wire status of a rollout of `image` the engine walked to its end."""
    app = app_spec(3)
    spec = dep_spec(image, strategy=strategy, analysis=ANALYSIS, progressDeadlineSeconds=20)
    status = Driver(app, spec, FakeWorld(units=app.units(), **world)).run()
    wire: dict[str, Any] = status.model_dump(by_alias=True, mode="json")
    return wire


@pytest.mark.parametrize("strategy", [CANARY, ROLLING], ids=["canary", "rolling"])
def test_a_clean_walk_has_no_problem(strategy: dict[str, Any]) -> None:
    good = walked("demo:v2", strategy)
    assert good["phase"] == "Succeeded"
    assert step_problems(good, "demo:v2") == []
    bad = walked("demo:v2-unready", strategy, unready_images={"demo:v2-unready"})
    assert bad["phase"] == "RolledBack"
    assert step_problems(bad, "demo:v2-unready") == []
    failing = walked("demo:v2-errors30", CANARY, error_rates={"demo:v2-errors30": 0.3})
    assert failing["phase"] == "RolledBack"
    assert step_problems(failing, "demo:v2-errors30") == []


def test_a_repeated_step_is_named() -> None:
    status = walked("demo:v2", CANARY)
    transitions = status["transitions"]
    done = [i for i, t in enumerate(transitions) if t["event"] == "StepCompleted"]
    repeat = dict(transitions[done[2]])
    status["transitions"] = [*transitions[: done[2] + 1], repeat, *transitions[done[2] + 1 :]]
    for seq, transition in enumerate(status["transitions"]):
        transition["seq"] = seq
    assert step_problems(status, "demo:v2") == [
        "steps completed [1, 2, 3, 3, 4, 5, 6, 7, 8, 9] of 9"
    ]


def test_a_skipped_step_and_a_lost_transition_are_named() -> None:
    status = walked("demo:v2", CANARY)
    done = [i for i, t in enumerate(status["transitions"]) if t["event"] == "StepCompleted"]
    del status["transitions"][done[1]]
    problems = step_problems(status, "demo:v2")
    assert "steps completed [1, 3, 4, 5, 6, 7, 8, 9] of 9" in problems
    assert any("not consecutive" in p for p in problems)


def test_an_end_other_than_the_image_dictates_is_named() -> None:
    status = walked("demo:v2", CANARY)
    assert expected_phase("demo:v2-errors30") == "RolledBack"
    problems = step_problems(status, "demo:v2-errors30")
    assert problems[0].startswith("ended Succeeded, expected RolledBack")


def test_a_batch_started_twice_is_named() -> None:
    status = walked("demo:v2", ROLLING)
    status["batches"][1]["attempts"] = 2
    assert step_problems(status, "demo:v2") == ["batches started more than once: [2]"]


def test_a_kill_lands_inside_only_between_the_first_step_and_the_end() -> None:
    assert Position("Progressing", 0, 8, "start").inside
    assert Position("RollingBack", 3, 8, "setWeight 50").inside
    assert not Position("Pending", None, None, "").inside
    assert not Position("Succeeded", 7, 8, "done").inside


def test_only_failures_nobody_meant_count() -> None:
    bad_5xx = Response(1.0, 500, "v2")
    good_5xx = Response(1.0, 500, "v1")
    proxy = Response(5.0, 503, None)
    ok = Response(1.0, 200, "v1")
    assert unexpected_failures([ok, bad_5xx, good_5xx, proxy], ["v2"]) == [good_5xx, proxy]
    assert unexpected_failures([proxy], [], [(4.0, 6.0)]) == []
