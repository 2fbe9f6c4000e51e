"""The kubectl plugin without a cluster: the progress view, the history view, which action
makes sense in which phase, and the errors of a missing or unreachable cluster."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from lockgate.cli.kubectl_view import ACTION_PHASES, refusal, render_history, render_status
from lockgate.cli.main import build_parser, main, quick_action

NOW = datetime(2026, 11, 23, 14, 0, 0, tzinfo=UTC)
ALL_PHASES = [
    "Pending",
    "Queued",
    "Progressing",
    "Paused",
    "Succeeded",
    "RollingBack",
    "RolledBack",
    "Failed",
    "Aborted",
]


def dep(phase: str, **status: Any) -> dict[str, Any]:
    spec = status.pop("spec", {})
    annotations = status.pop("annotations", {})
    return {
        "metadata": {
            "name": "shop-v2",
            "namespace": "prod",
            "annotations": annotations,
            "resourceVersion": "7",
            "creationTimestamp": "2026-11-23T13:50:00Z",
        },
        "spec": {
            "application": "shop",
            "image": "shop:2",
            "strategy": {"type": "Canary"},
            "analysis": {"maxConsecutiveFailures": 3},
            **spec,
        },
        "status": {"phase": phase, **status},
    }


RUNNING_CANARY = dep(
    "Progressing",
    image="shop:2",
    previousImage="shop:1",
    revision=2,
    startedAt="2026-11-23T13:58:00Z",
    message="rolling out shop:2 (revision 2, Canary, 9 steps)",
    step={
        "index": 2,
        "total": 9,
        "description": "setWeight 10 (analysis gate)",
        "startedAt": "2026-11-23T13:59:30Z",
    },
    weights={"stable": 90, "canary": 10},
    analysis=[
        {
            "step": 2,
            "at": "2026-11-23T13:59:50Z",
            "canary": {"requests": 120, "errorRate": 0.0083, "p95": 0.012},
            "stable": {"requests": 1080, "errorRate": 0.001, "p95": 0.0104},
            "verdict": "Inconclusive",
            "reason": "canary served 12 requests < minRequests 20",
            "source": "prometheus http://prometheus:9090",
        }
    ],
    consecutiveFailures=1,
    log=[
        {"at": f"2026-11-23T13:59:{i:02d}Z", "level": "Info", "message": f"line {i}"}
        for i in range(12)
    ]
    + [{"at": "2026-11-23T13:59:55Z", "level": "Warning", "message": "health check failed"}],
    conditions=[
        {"type": "Ready", "status": "False", "reason": "Progressing"},
        {"type": "Progressing", "status": "True", "reason": "Progressing"},
        {"type": "Reconciling", "status": "True", "reason": "Progressing"},
    ],
)


def test_running_canary_shows_step_weights_analysis_and_recent_log() -> None:
    text = render_status(RUNNING_CANARY, NOW)
    lines = text.splitlines()
    assert lines[0] == "Deployment shop-v2  namespace prod  application shop  (Canary)"
    assert "Image:     shop:2  (previous shop:1)  revision 2" in text
    assert "Phase:     Progressing  running for 2m" in text
    assert "Message:   rolling out shop:2 (revision 2, Canary, 9 steps)" in text
    assert "Step:      3/9  setWeight 10 (analysis gate)  (for 30s)  [##.......]" in text
    assert "Weights:   stable  90%  canary  10%  [##..................]" in text
    assert "Analysis:  Inconclusive at 13:59:50 (10s ago, step 3), failures in a row 1/3" in text
    header = next(line for line in lines if "requests" in line)
    assert header.split() == [
        "requests",
        "5xx",
        "p95",
        "from",
        "prometheus",
        "http://prometheus:9090",
    ]
    canary = next(line for line in lines if line.strip().startswith("canary "))
    stable = next(line for line in lines if line.strip().startswith("stable "))
    assert canary.split() == ["canary", "120", "0.83%", "12ms"]
    assert stable.split() == ["stable", "1080", "0.10%", "10ms"]
    assert "canary served 12 requests < minRequests 20" in text
    assert "Ready=False (Progressing)" in text and "Reconciling" not in text
    log = lines[lines.index("Recent log:") + 1 :]
    assert len(log) == 8  # the newest 8 of 13
    assert log[0] == "  13:59:05  line 5"
    assert log[-1] == "  13:59:55  Warning: health check failed"
    assert "Next:" not in text


def test_log_lines_can_be_limited_or_hidden() -> None:
    assert "Recent log:" not in render_status(RUNNING_CANARY, NOW, log_lines=0)
    text = render_status(RUNNING_CANARY, NOW, log_lines=2)
    assert text.splitlines()[-2:] == [
        "  13:59:11  line 11",
        "  13:59:55  Warning: health check failed",
    ]


def test_paused_for_promote_tells_the_command_to_type() -> None:
    obj = dep(
        "Paused",
        message="waiting for promote at step 4",
        step={"index": 3, "total": 5, "description": "pause until promote"},
        weights={"stable": 50, "canary": 50},
    )
    text = render_status(obj, NOW)
    assert "Step:      4/5  pause until promote" in text
    assert text.endswith(
        "Next:      waiting for you: kubectl lockgate promote shop-v2 -n prod (or abort)"
    )


def test_spec_paused_and_pending_action_are_flagged() -> None:
    obj = dep("Paused", spec={"paused": True}, annotations={"lockgate.dev/action": "promote"})
    text = render_status(obj, NOW)
    assert "[spec.paused, action promote pending]" in text
    assert "kubectl lockgate resume shop-v2 -n prod" in text


def test_rolling_batches_are_listed_and_finished_rollout_has_no_progress_bar() -> None:
    obj = dep(
        "RolledBack",
        spec={"strategy": {"type": "Rolling"}},
        message="batch 2 failed: 1/2 ready; rolled back to shop:1",
        finishedAt="2026-11-23T13:55:00Z",
        step={"index": 1, "total": 3, "description": "batch 2"},
        batches=[
            {"index": 0, "targets": ["replica-1", "replica-2"], "state": "RolledBack"},
            {
                "index": 1,
                "targets": ["replica-3", "replica-4"],
                "state": "Failed",
                "attempts": 2,
                "reason": "1/2 ready",
            },
        ],
    )
    text = render_status(obj, NOW)
    assert "Phase:     RolledBack  finished 300s ago" in text.replace("5m ago", "300s ago")
    assert "   1  RolledBack  replica-1, replica-2" in text
    assert "   2  Failed      replica-3, replica-4  attempts 2  1/2 ready" in text
    assert "[#" not in text and "Step:      2/3  batch 2" in text
    assert "kubectl lockgate retry shop-v2 -n prod" in text


def test_a_deployment_without_status_renders_as_pending() -> None:
    obj = {"metadata": {"name": "x"}, "spec": {"application": "a", "image": "i"}}
    text = render_status(obj, NOW)
    assert "Phase:     Pending" in text and "(Rolling)" in text


# Which action is meaningful in which phase: mirrors lockgate.engine.decide.
EXPECTED = {
    "promote": {"Progressing", "Paused"},
    "promote-full": {"Progressing", "Paused"},
    "abort": {"Pending", "Queued", "Progressing", "Paused", "Failed"},
    "retry": {"RolledBack", "Aborted", "Failed"},
    "pause": {"Pending", "Queued", "Progressing", "Paused"},
}


@pytest.mark.parametrize("action", sorted(EXPECTED))
@pytest.mark.parametrize("phase", ALL_PHASES)
def test_action_validity_by_phase(action: str, phase: str) -> None:
    problem = refusal(action, dep(phase))
    if phase in EXPECTED[action]:
        assert problem is None
    else:
        assert problem is not None and phase in problem and "shop-v2" in problem


def test_abort_while_traffic_returns_without_automatic_rollback_is_sent() -> None:
    """RollingBack after a failure with rollback.automatic false (traffic returning, new
    instances kept) ends in Failed, where abort removes them: the engine takes an abort in
    that RollingBack too. A full rollback (automatic, or an abort's) has nothing to abort."""
    manual = {"rollback": {"automatic": False}}
    assert refusal("abort", dep("RollingBack", spec=manual)) is None
    assert refusal("abort", dep("RollingBack")) == (
        "cannot abort shop-v2: it is RollingBack; abort stops a rollout that has not finished "
        "(or a Failed one)"
    )
    assert refusal("abort", dep("RollingBack", spec=manual, aborted=True)) is not None
    assert refusal("retry", dep("RollingBack", spec=manual)) is not None


def test_refusals_say_why() -> None:
    assert refusal("retry", dep("Progressing")) == (
        "cannot retry shop-v2: it is Progressing; retry starts a rollout again after "
        "RolledBack, Aborted or Failed"
    )
    assert refusal("promote", dep("Succeeded")) == (
        "cannot promote shop-v2: it is Succeeded; promote moves a running rollout past a pause "
        "or analysis gate"
    )
    assert "promote --full" in (refusal("promote-full", dep("Aborted")) or "")
    assert refusal("resume", dep("Progressing")) == "shop-v2 is not paused (spec.paused is false)"
    assert refusal("resume", dep("Paused", spec={"paused": True})) is None
    assert refusal("pause", dep("Paused", spec={"paused": True})) == (
        "shop-v2 is already paused (spec.paused is true)"
    )
    # the engine applies a promote under spec.paused: one step on, still held
    assert refusal("promote", dep("Paused", spec={"paused": True})) is None
    pending = dep("Paused", annotations={"lockgate.dev/action": "abort"})
    assert "already has action 'abort' waiting" in (refusal("promote", pending) or "")


def test_action_table_covers_every_engine_action() -> None:
    from lockgate.api.deployment import ACTIONS

    assert set(ACTION_PHASES) == set(ACTIONS)


def test_history_lists_recorded_results_and_deployments_of_the_app_only() -> None:
    app = {
        "metadata": {"name": "shop", "namespace": "prod"},
        "status": {
            "phase": "Healthy",
            "stable": {"image": "shop:2", "deployment": "shop-v2", "since": "2026-11-23T13:58:00Z"},
            "instances": {"desired": 4, "ready": 4, "updated": 4},
            "history": [
                {
                    "deployment": "shop-v2",
                    "image": "shop:2",
                    "revision": 1,
                    "result": "Succeeded",
                    "startedAt": "2026-11-23T13:55:00Z",
                    "finishedAt": "2026-11-23T13:58:00Z",
                },
                {
                    "deployment": "shop-bad",
                    "image": "shop:2-broken",
                    "revision": 1,
                    "result": "RolledBack",
                    "startedAt": "2026-11-23T13:50:00Z",
                    "finishedAt": "2026-11-23T13:50:40Z",
                },
            ],
        },
    }
    deps = [
        dep("Succeeded"),
        {
            "metadata": {"name": "other", "creationTimestamp": "2026-11-23T13:00:00Z"},
            "spec": {"application": "cart", "image": "cart:1"},
        },
    ]
    text = render_history(app, deps, NOW)
    assert "Stable:    shop:2 from shop-v2, since 2m ago" in text
    assert "Instances: 4/4 ready, 4 updated" in text
    rows = text.splitlines()
    first = rows.index("History (newest first):")
    assert rows[first + 1].split()[:4] == ["DEPLOYMENT", "REVISION", "IMAGE", "RESULT"]
    assert rows[first + 2].split()[:5] == ["shop-v2", "1", "shop:2", "Succeeded", "5m"]
    assert "3m00s" in rows[first + 2]
    assert rows[first + 3].split()[:4] == ["shop-bad", "1", "shop:2-broken", "RolledBack"]
    assert "40s" in rows[first + 3]
    deployments = rows[rows.index("Deployments:") + 1 :]
    assert deployments[0].split() == ["NAME", "PHASE", "IMAGE", "REVISION", "STEP", "AGE"]
    assert [line.split()[0] for line in deployments[1:]] == ["shop-v2"]


def test_history_of_a_new_application() -> None:
    text = render_history({"metadata": {"name": "shop"}}, [], NOW)
    assert "(none recorded yet)" in text and "phase Unknown" in text


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["status"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["promote", "x", "--bogus"])
    assert exc.value.code == 2


def test_no_kubeconfig_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    assert main(["status", "shop-v2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no cluster configured:") and "missing" in err


def test_unreachable_cluster_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [
                    {"name": "ctx", "context": {"cluster": "c", "user": "u", "namespace": "ns1"}}
                ],
                "current-context": "ctx",
            }
        )
    )
    assert main(["history", "shop", "--kubeconfig", str(kubeconfig)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot reach the cluster at http://127.0.0.1:{port}:"), err


# ---------------------------------------------------------------- command flow, with fakes


def fake_cluster(monkeypatch: pytest.MonkeyPatch, objects: list[dict[str, Any]]) -> list[Any]:
    """Make get_deployment return `objects` one after another (the last one repeats);
    KeyboardInterrupt instances are raised instead. Returns the patches sent."""
    from lockgate.cli import kubectl

    sent: list[Any] = []
    queue = list(objects)

    def get(target: Any, name: str) -> dict[str, Any]:
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(item, BaseException):
            raise item
        return item

    monkeypatch.setattr(kubectl, "connect", lambda args: kubectl.Target("prod", "fake"))
    monkeypatch.setattr(kubectl, "get_deployment", get)
    monkeypatch.setattr(kubectl, "get_application_spec", lambda target, name: None)
    monkeypatch.setattr(kubectl.time, "sleep", lambda s: None)
    return sent


def versioned(obj: dict[str, Any], version: str) -> dict[str, Any]:
    return {**obj, "metadata": {**obj["metadata"], "resourceVersion": version}}


def test_watch_prints_each_change_and_exits_0_on_success(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    running = versioned(RUNNING_CANARY, "1")
    fake_cluster(monkeypatch, [running, running, versioned(dep("Succeeded"), "2")])
    assert main(["status", "shop-v2", "-w"]) == 0
    frames = capsys.readouterr().out.split("-" * 60)
    assert len(frames) == 2  # the unchanged poll printed nothing
    assert "Phase:     Progressing" in frames[0] and "Phase:     Succeeded" in frames[1]


def test_watch_exits_1_when_the_rollout_ends_otherwise(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_cluster(monkeypatch, [versioned(RUNNING_CANARY, "1"), versioned(dep("RolledBack"), "2")])
    assert main(["status", "shop-v2", "-w"]) == 1


def test_ctrl_c_ends_a_watch_cleanly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_cluster(monkeypatch, [versioned(RUNNING_CANARY, "1"), KeyboardInterrupt()])
    assert main(["status", "shop-v2", "-w"]) == 0
    captured = capsys.readouterr()
    assert "Phase:     Progressing" in captured.out and captured.err == ""


def test_watch_gives_up_after_its_timeout(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lockgate.cli import kubectl

    fake_cluster(monkeypatch, [versioned(RUNNING_CANARY, "1")])
    clock = iter(range(0, 10_000, 10))
    monkeypatch.setattr(kubectl.time, "monotonic", lambda: float(next(clock)))
    assert main(["status", "shop-v2", "-w", "--timeout", "30"]) == 1
    assert "still Progressing after 30s" in capsys.readouterr().err


def test_an_action_the_operator_ignores_exits_1_with_its_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lockgate.cli import kubectl

    before = dep("Progressing", log=[{"at": "2026-11-23T13:59:00Z", "message": "old"}])
    after = dep(
        "Progressing",
        message="waiting for 1 new instance(s)",
        log=[
            {"at": "2026-11-23T13:59:00Z", "message": "old"},
            {"at": "2026-11-23T14:00:01Z", "message": "action promote received"},
            {
                "at": "2026-11-23T14:00:02Z",
                "level": "Warning",
                "message": "action promote ignored: step 1 (start 1 canary instance(s)) waits "
                "for instances or traffic, not for a promote",
            },
        ],
    )
    fake_cluster(monkeypatch, [after])
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(
        kubectl,
        "patch_deployment",
        lambda target, name, check, body: (sent.append(body), (before, before))[1],
    )
    assert main(["promote", "shop-v2"]) == 1
    out = capsys.readouterr().out
    assert sent == [{"metadata": {"annotations": {"lockgate.dev/action": "promote"}}}]
    assert "promote requested for shop-v2 (it was Progressing)" in out
    assert "Warning: action promote ignored: step 1" in out and "old" not in out


def test_context_flag_picks_that_contexts_namespace(tmp_path: Path) -> None:
    import argparse

    from lockgate.cli.kubectl import connect

    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [
                    {"name": "one", "context": {"cluster": "c", "user": "u", "namespace": "ns1"}},
                    {"name": "two", "context": {"cluster": "c", "user": "u", "namespace": "ns2"}},
                    {"name": "bare", "context": {"cluster": "c", "user": "u"}},
                ],
                "current-context": "one",
            }
        )
    )

    def namespace(*flags: str) -> str:
        parser = argparse.ArgumentParser()
        from lockgate.cli.kubectl import add_connection_flags

        add_connection_flags(parser)
        args = parser.parse_args(["--kubeconfig", str(kubeconfig), *flags])
        return connect(args).namespace

    assert namespace() == "ns1"
    assert namespace("--context", "two") == "ns2"
    assert namespace("--context", "bare") == "default"
    assert namespace("--context", "two", "-n", "mine") == "mine"


def test_connection_flags_work_before_the_subcommand_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lockgate.cli import kubectl

    seen: list[tuple[str | None, str | None, str | None]] = []

    def connect(args: Any) -> Any:
        seen.append((args.namespace, args.context, args.kubeconfig))
        raise kubectl.PluginError("stop here")

    monkeypatch.setattr(kubectl, "connect", connect)
    assert main(["-n", "a", "--context", "c", "status", "x"]) == 1
    assert main(["-n", "a", "status", "x", "-n", "b", "--kubeconfig", "k"]) == 1
    assert main(["status", "x"]) == 1
    assert seen == [("a", "c", None), ("b", None, "k"), (None, None, None)]


STEPS = ["start 1 canary instance(s)", "setWeight 10 (analysis gate)", "pause 30s"] + [
    f"step {i}" for i in range(4, 10)
]


def test_the_step_list_marks_where_the_rollout_is() -> None:
    lines = render_status(RUNNING_CANARY, NOW, steps=STEPS).splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("Step:"))
    listed = lines[first + 1 : first + 10]
    assert [line.split()[0] for line in listed] == [str(i) for i in range(1, 10)]
    assert listed[0].endswith("done") and listed[1].endswith("done")
    assert listed[2].endswith("<- now") and listed[2].split()[1:3] == ["pause", "30s"]
    assert all(line.split()[-1] != "done" and "<-" not in line for line in listed[3:])
    # every mark starts in the same column
    assert len({line.index("done") for line in listed[:2]} | {listed[2].index("<-")}) == 1


def test_the_step_list_of_a_finished_rollout() -> None:
    done = dep("Succeeded", step={"index": 8, "total": 9, "description": "done"})
    listed = render_status(done, NOW, steps=STEPS).splitlines()
    assert sum(line.startswith("  ") and line.endswith("done") for line in listed) == 9
    failed = dep("RolledBack", step={"index": 4, "total": 9, "description": "step 5"})
    text = render_status(failed, NOW, steps=STEPS)
    assert re.search(r"\n +5  step 5 +<- RolledBack here\n", text), text


def test_a_step_list_that_does_not_match_the_status_is_not_shown() -> None:
    text = render_status(RUNNING_CANARY, NOW, steps=STEPS[:5])
    assert "<- now" not in text


def test_steps_are_compiled_by_the_engine_from_both_specs() -> None:
    from lockgate.cli.kubectl import step_descriptions

    app = yaml.safe_load(
        (Path(__file__).parents[2] / "manifests/examples/kubernetes/application.yaml").read_text()
    )
    obj = dep("Progressing", previousImage="shop:1")
    obj["spec"]["strategy"] = {
        "type": "Canary",
        "canary": {"steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}]},
    }
    assert step_descriptions(app["spec"], obj) == [
        "start 1 canary instance(s)",
        "setWeight 20 (analysis gate)",
        "pause until promote",
        "start 4 canary instance(s)",
        "setWeight 100",
        "promote: new version becomes stable, old instances removed",
    ]
    assert step_descriptions(None, obj) is None
    assert step_descriptions({"kubernetes": {}, "docker": {"hosts": []}}, obj) is None


def test_promote_is_checked_against_the_current_step_when_the_plan_is_known() -> None:
    steps = [("start", False), ("shift", True), ("pause", False), ("shift", False)]

    def at(index: int, **step: Any) -> dict[str, Any]:
        return dep(
            "Progressing", step={"index": index, "total": 4, "description": f"s{index}", **step}
        )

    assert refusal("promote", at(0), steps) == (
        "cannot promote shop-v2 now: step 1 (s0) waits for instances or traffic, not for a "
        "promote (promote --full skips every remaining pause and gate)"
    )
    assert refusal("promote", at(1), steps) is not None  # gate, weight not live yet
    assert refusal("promote", at(1, weightsLiveAt="2026-11-23T13:59:00Z"), steps) is None
    assert refusal("promote", at(2), steps) is None
    assert refusal("promote", at(3, weightsLiveAt="2026-11-23T13:59:00Z"), steps) is not None
    assert refusal("promote-full", at(0), steps) is None
    assert refusal("promote", at(0), steps[:2]) is None  # a plan that does not match: no check
    assert refusal("promote", at(0), []) is None


# ------------------------------------------------- the actions' arguments without argparse

TOKENS = [
    "abort",
    "promote",
    "retry",
    "pause",
    "resume",
    "status",
    "web-v2",
    "other",
    "-n",
    "--namespace",
    "--namespace=ns1",
    "-nns1",
    "--context",
    "--kubeconfig",
    "--wait-seconds",
    "2.5",
    "-1",
    "x1",
    "--no-wait",
    "--no-w",
    "--full",
    "--names",
    "-h",
    "--",
    "--bogus",
]


PART = st.one_of(
    st.tuples(
        st.sampled_from(["-n", "--namespace", "--context", "--kubeconfig", "--wait-seconds"]),
        st.sampled_from(["ns1", "2.5", "-1", "1e3", "nan", "web-v2", "--no-wait"]),
    ),
    st.tuples(st.sampled_from(["--no-wait", "--full", "web-v2", "other"])),
    st.tuples(st.sampled_from(TOKENS)),
)
VALID = st.builds(
    lambda action, parts: [action, *(token for part in parts for token in part)],
    st.sampled_from(["abort", "promote", "retry", "pause", "resume"]),
    st.lists(
        st.sampled_from(
            [
                ("-n", "ns1"),
                ("--namespace", "prod"),
                ("--context", "ctx"),
                ("--kubeconfig", "/k"),
                ("--wait-seconds", "2.5"),
                ("--wait-seconds", "1e3"),
                ("--wait-seconds", "nan"),
                ("--no-wait",),
                ("--full",),
            ]
        ),
        max_size=4,
    ).flatmap(lambda flags: st.permutations([("web-v2",), *flags])),
)
ARGV = st.one_of(
    VALID,
    st.lists(st.sampled_from(TOKENS), max_size=8),
    st.builds(
        lambda action, parts: [action, *(token for part in parts for token in part)],
        st.sampled_from(["abort", "promote", "retry", "pause", "resume", "status"]),
        st.lists(PART, max_size=6),
    ),
)


@given(ARGV)
def test_actions_parsed_without_argparse_parse_as_argparse_parses_them(argv: list[str]) -> None:
    """quick_action answers only what build_parser's parser answers the same way (and
    leaves the rest, errors included, to argparse)."""
    quick = quick_action(argv)
    if quick is None:
        return
    assert vars(quick) == vars(build_parser().parse_args(argv)), argv


@pytest.mark.parametrize(
    "argv",
    [
        ["abort", "web-v2", "--no-wait"],
        ["abort", "-n", "prod", "web-v2"],
        ["promote", "web-v2", "--full", "--wait-seconds", "30", "--context", "c"],
        ["pause", "web-v2", "--kubeconfig", "/k", "--namespace", "prod", "--no-wait"],
        ["resume", "web-v2"],
        ["retry", "web-v2", "-n", "prod"],
    ],
)
def test_the_common_forms_of_an_action_are_parsed_without_argparse(argv: list[str]) -> None:
    quick = quick_action(argv)
    assert quick is not None
    assert vars(quick) == vars(build_parser().parse_args(argv))


@pytest.mark.parametrize(
    ("argv", "collecting"),
    [
        (["abort", "web-v2"], False),
        (["status", "web-v2"], False),
        (["status", "web-v2", "-w"], True),  # long-running: the garbage collector is on
        (["dashboard"], True),
    ],
)
def test_only_one_shot_commands_run_without_the_garbage_collector(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], collecting: bool
) -> None:
    import gc

    from lockgate.cli import dashboard, kubectl

    seen: list[bool] = []

    def record(*args: Any) -> int:
        seen.append(gc.isenabled())
        return 0

    monkeypatch.setattr(kubectl, "action_command", record)
    monkeypatch.setattr(kubectl, "status_command", record)
    monkeypatch.setattr(dashboard, "dashboard_command", record)
    assert gc.isenabled()
    assert main(argv) == 0
    assert seen == [collecting]
    assert gc.isenabled()  # and it is back afterwards
