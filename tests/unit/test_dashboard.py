"""`kubectl lockgate dashboard` without a cluster: what the pages render, the server-sent-event
frames, and the server's checks (Host, Origin, CSRF token) against a fake of its Backend,
served for real on a loopback port."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from lockgate.cli import dashboard_view as view
from lockgate.cli.dashboard import (
    Change,
    Problem,
    Settings,
    Snapshot,
    WatchItem,
    make_server,
    refusals,
)
from lockgate.cli.kubectl import PluginError
from lockgate.names import ACTION_ANNOTATION

CSRF = "token-for-tests-0123456789"
STEPS = [
    "start 1 canary instance(s)",
    "setWeight 20 (analysis gate)",
    "pause until promote",
    "setWeight 100 (analysis gate)",
    "promote: new version becomes stable",
]


def dep(phase: str = "Progressing", name: str = "shop-v2", **status: Any) -> dict[str, Any]:
    spec = status.pop("spec", {})
    annotations = status.pop("annotations", {})
    return {
        "metadata": {
            "name": name,
            "namespace": "prod",
            "annotations": annotations,
            "resourceVersion": status.pop("rv", "7"),
            "creationTimestamp": "2026-11-23T13:50:00Z",
        },
        "spec": {"application": "shop", "image": "shop:2", "strategy": {"type": "Canary"}, **spec},
        "status": {"phase": phase, **status},
    }


def run(step: int, canary: float, p95: float, **extra: Any) -> dict[str, Any]:
    return {
        "step": step,
        "at": f"2026-11-23T13:59:{10 + step:02d}Z",
        "canary": {"requests": 100, "errorRate": canary, "p95": p95, **extra},
        "stable": {"requests": 400, "errorRate": 0.001, "p95": 0.010, **extra},
        "verdict": "Passed",
        "reason": "",
    }


RUNNING = dep(
    image="shop:2",
    previousImage="shop:1",
    revision=2,
    startedAt="2026-11-23T13:58:00Z",
    message="rolling out shop:2",
    step={"index": 2, "total": 5, "description": "pause until promote"},
    weights={"stable": 80, "canary": 20},
    analysis=[run(1, 0.01, 0.012), run(2, 0.02, 0.015)],
    transitions=[
        {"phase": "Progressing", "at": "2026-11-23T13:58:00Z", "message": "started"},
        {"phase": "Paused", "at": "2026-11-23T13:59:30Z", "message": "waiting for promote"},
    ],
    log=[
        {"at": "2026-11-23T13:59:00Z", "level": "Info", "message": "step 1/5 done: start"},
        {"at": "2026-11-23T13:59:05Z", "level": "Warning", "message": "health check failed"},
    ],
)

APP = {
    "metadata": {"name": "shop", "namespace": "prod"},
    "spec": {"kubernetes": {"replicas": 4, "template": {}}},
    "status": {
        "phase": "Progressing",
        "stable": {"image": "shop:1", "deployment": "shop-v1"},
        "activeDeployment": "shop-v2",
        "instances": {"desired": 4, "ready": 4, "updated": 1},
    },
}


def sections(obj: dict[str, Any], steps: list[str] | None = STEPS) -> dict[str, str]:
    return view.render_deployment(obj, steps, CSRF, refusals(obj, []))


# ------------------------------------------------------------------------------- rendering


def test_live_view_marks_the_current_step_and_shows_the_split() -> None:
    html = sections(RUNNING)
    steps = re.findall(r'<li class="(\w+)"( aria-current="step")?>', html["steps"])
    assert [s[0] for s in steps] == ["done", "done", "now", "todo", "todo"]
    assert [bool(s[1]) for s in steps] == [False, False, True, False, False]
    assert "pause until promote" in html["steps"]
    assert '<strong data-field="stable">80%</strong>' in html["weights"]
    assert '<strong data-field="canary">20%</strong>' in html["weights"]
    assert 'aria-label="stable 80%, canary 20%"' in html["weights"]
    assert '<rect class="canary" x="80" y="0" width="20"' in html["weights"]
    assert '<span data-field="step">3/5 pause until promote</span>' in html["summary"]
    assert "rolling out shop:2" in html["summary"]


def test_a_finished_rollout_marks_where_it_stopped() -> None:
    aborted = dep("Aborted", step={"index": 1, "total": 5, "description": "setWeight 20"})
    html = sections(aborted)["steps"]
    assert '<li class="stopped" aria-current="step">' in html
    assert "Aborted here" in html
    succeeded = dep("Succeeded", step={"index": 4, "total": 5, "description": "promote"})
    assert sections(succeeded)["steps"].count('class="done"') == 5


def test_without_the_plan_the_step_is_still_shown() -> None:
    html = sections(RUNNING, steps=None)["steps"]
    assert "Step 3/5 pause until promote" in html and "<ol" not in html


def test_analysis_charts_canary_against_stable_only_for_metrics_present() -> None:
    html = sections(RUNNING)["analysis"]
    charts = re.findall(r'data-metric="(\w+)"', html)
    assert charts == ["errorRate", "p95"]
    assert "canary 2.00%" in html and "stable 0.10%" in html
    assert "canary 15 ms" in html
    assert html.count("<polyline") == 4  # two metrics, two versions
    with_resources = dep(analysis=[run(1, 0.01, 0.01, cpu=0.25, memory=64 * 2**20)])
    charts = re.findall(r'data-metric="(\w+)"', sections(with_resources)["analysis"])
    assert charts == ["errorRate", "p95", "cpu", "memory"]
    assert "64.0 MiB" in sections(with_resources)["analysis"]
    assert "No analysis run yet" in sections(dep())["analysis"]


def test_batches_transitions_and_log() -> None:
    rolling = dep(
        batches=[
            {"index": 0, "targets": ["web-1", "web-2"], "state": "Succeeded"},
            {"index": 1, "targets": ["web-3"], "state": "Failed", "reason": "unhealthy"},
        ]
    )
    html = sections(rolling)["batches"]
    assert "web-1, web-2" in html and "unhealthy" in html and ">Failed<" in html
    transitions = sections(RUNNING)["transitions"]
    assert transitions.index("waiting for promote") < transitions.index("started")  # newest first
    log = sections(RUNNING)["log"]
    assert log.index("step 1/5 done") < log.index("health check failed")  # newest last
    assert '<span class="level">Warning:</span>' in log


def test_actions_carry_the_token_and_refused_ones_say_why() -> None:
    html = sections(RUNNING)["actions"]
    forms = re.findall(r"<form .*?</form>", html)
    assert len(forms) == len(view.ACTIONS)
    assert all(f'name="csrf" value="{CSRF}"' in f for f in forms)
    assert all('action="/ns/prod/deployments/shop-v2/actions"' in f for f in forms)
    retry = next(f for f in forms if 'value="retry"' in f)
    assert "disabled" in retry and "cannot retry shop-v2: it is Progressing" in retry
    abort = next(f for f in forms if 'value="abort"' in f)
    assert "disabled" not in abort
    assert 'data-confirm="Abort shop-v2: stop the rollout' in abort
    resume = next(f for f in forms if 'value="resume"' in f)
    assert "is not paused" in resume
    pending = dep(annotations={ACTION_ANNOTATION: "promote"})
    assert "already has action" in sections(pending)["actions"]


def test_text_is_escaped_and_credentials_in_urls_are_masked() -> None:
    hostile = dep(
        message='<script>alert("x")</script> from https://deploy:hunter2secret@git.example/x',
        log=[{"at": "2026-11-23T13:59:00Z", "message": "<img src=x onerror=alert(1)>"}],
    )
    html = "".join(sections(hostile).values())
    assert "<script>" not in html and "<img src" not in html
    assert "&lt;script&gt;" in html
    assert "hunter2secret" not in html
    assert "https://[redacted]@git.example/x" in html


def test_the_list_never_renders_spec_values_that_may_hold_secrets() -> None:
    docker_app = {
        "metadata": {"name": "edge", "namespace": "prod"},
        "spec": {
            "docker": {
                "hosts": [
                    {
                        "name": "web-1",
                        "url": "tcp://admin:tcp-pass-1234@10.0.0.11:2376",
                        "sshKeySecretRef": {"name": "deploy-key-secret", "key": "id"},
                    }
                ],
                "container": {"env": [{"name": "TOKEN", "value": "plain-env-value-42"}]},
            },
            "notifications": [{"url": "https://hooks.example/T000/very-secret-path"}],
        },
        "status": {"phase": "Healthy"},
    }
    html = "".join(view.render_list([docker_app, APP], [RUNNING], False).values())
    for secret in ("tcp-pass-1234", "plain-env-value-42", "deploy-key-secret", "very-secret"):
        assert secret not in html
    assert "Docker, 1 host(s): web-1" in html


def test_the_list_shows_target_stable_phase_and_active_rollout() -> None:
    html = view.render_list([APP], [RUNNING, dep("Succeeded", name="shop-v1")], False)
    apps = html["applications"]
    assert "Kubernetes, 4 replica(s)" in apps
    assert "shop:1" in apps and "from shop-v1" in apps
    assert 'data-phase="Progressing"' in apps
    assert '<a href="/ns/prod/deployments/shop-v2">shop-v2</a>' in apps
    assert "step 3/5 pause until promote, canary 20%" in apps
    deps = html["deployments"]
    assert deps.count("<tr>") == 3  # head and two rows
    assert ">Namespace<" not in apps
    assert ">Namespace<" in view.render_list([APP], [], True)["applications"]


def test_the_page_is_accessible_and_loads_only_its_own_assets() -> None:
    html = view.page(
        "Deployment shop-v2",
        sections(RUNNING),
        view.DEPLOYMENT_SECTIONS,
        csrf=CSRF,
        events="/ns/prod/deployments/shop-v2/events",
    )
    assert html.startswith("<!doctype html>") and '<html lang="en">' in html
    assert '<meta name="viewport"' in html
    assert re.findall(r'<script src="([^"]+)"', html) == ["/static/dashboard.js"]
    assert "<script>" not in html and " style=" not in html  # the CSP allows neither
    for key, heading in view.DEPLOYMENT_SECTIONS:
        assert f'aria-labelledby="h-{key}"' in html and f">{heading}</h2>" in html
    assert '<dialog id="confirm" aria-labelledby="confirm-title"' in html
    assert 'id="result" role="status" aria-live="polite"' in html


# ------------------------------------------------------------------------------- SSE frames


def parse_sse(raw: bytes) -> list[dict[str, str]]:
    """Frames as a browser's EventSource reads them (fields per line, blank line ends)."""
    events = []
    for block in raw.decode().split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            fields[key] = fields[key] + "\n" + value if key in fields else value
        if "data" in fields:
            events.append(fields)
    return events


def test_sse_frames_keep_multi_line_html_in_one_event() -> None:
    data = {"log": "<li>one</li>\n<li>two\r\n\n</li>", "id": "x\n\ndata: forged"}
    frame = view.sse_frame("update", data, "42")
    assert frame.endswith(b"\n\n") and frame.count(b"\n\n") == 1
    assert frame.startswith(b"event: update\nid: 42\ndata: ")
    (event,) = parse_sse(frame)
    assert event["event"] == "update" and event["id"] == "42"
    assert json.loads(event["data"]) == data
    with pytest.raises(ValueError):
        view.sse_frame("update\ndata: x", {})
    with pytest.raises(ValueError):
        view.sse_frame("update", {}, "1\n2")
    assert parse_sse(view.SSE_KEEPALIVE) == []


def test_only_changed_sections_are_sent_again() -> None:
    before = sections(RUNNING)
    moved = json.loads(json.dumps(RUNNING))
    moved["status"]["weights"] = {"stable": 50, "canary": 50}
    after = sections(moved)
    assert set(view.changed(before, after)) == {"weights"}
    assert view.changed(after, after) == {}


# ------------------------------------------------------------------------------- the server


class FakeBackend:
    def __init__(self, namespace: str | None = "prod") -> None:
        self.namespace = namespace
        self.objects = {"shop-v2": RUNNING}
        self.acted: list[tuple[str, str, str]] = []
        self.fail_with: str | None = None
        self.feed: dict[str, list[WatchItem]] = {}
        self.watching = threading.Event()

    def list_objects(self, plural: str) -> list[dict[str, Any]]:
        return [APP] if plural == "applications" else list(self.objects.values())

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        if name not in self.objects:
            raise PluginError(f'deployments.lockgate.dev "{name}" not found')
        return self.objects[name]

    def steps(self, obj: dict[str, Any]) -> tuple[list[str] | None, list[tuple[str, bool]]]:
        return STEPS, []

    def watch(
        self, plural: str, namespace: str | None, name: str | None, stop: threading.Event
    ) -> Iterator[WatchItem]:
        yield from self.feed.get(plural, [])
        self.watching.set()
        stop.wait(5)

    def act(self, namespace: str, name: str, action: str) -> str:
        if self.fail_with:
            raise PluginError(self.fail_with)
        self.acted.append((namespace, name, action))
        return f"{action} requested for {name}"


@pytest.fixture
def served() -> Iterator[tuple[FakeBackend, str]]:
    backend = FakeBackend()
    settings = Settings(backend, "127.0.0.1", 0, CSRF)
    server = make_server(settings)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield backend, f"http://127.0.0.1:{settings.port}"
    finally:
        server.shutdown()
        server.server_close()


def post(
    base: str, *, token: str | None = CSRF, origin: str | None = "self", **form: str
) -> httpx.Response:
    headers = {"Accept": "application/json"}
    if origin is not None:
        headers["Origin"] = base if origin == "self" else origin
    body = {"action": "abort", "confirmed": "1", **form}
    if token is not None:
        body["csrf"] = token
    return httpx.post(f"{base}/ns/prod/deployments/shop-v2/actions", data=body, headers=headers)


def test_pages_and_assets_are_served_with_a_strict_policy(served: tuple[FakeBackend, str]) -> None:
    _, base = served
    listed = httpx.get(f"{base}/")
    assert listed.status_code == 200
    assert "script-src 'self'" in listed.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in listed.headers["content-security-policy"]
    assert listed.headers["x-content-type-options"] == "nosniff"
    assert "shop-v2" in listed.text and 'data-events="/events"' in listed.text
    live = httpx.get(f"{base}/ns/prod/deployments/shop-v2")
    assert live.status_code == 200 and 'aria-current="step"' in live.text
    assert f'content="{CSRF}"' in live.text
    js = httpx.get(f"{base}/static/dashboard.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "EventSource" in js.text
    assert httpx.get(f"{base}/static/dashboard.css").status_code == 200
    assert httpx.get(f"{base}/ns/prod/deployments/nope").status_code == 404
    assert httpx.get(f"{base}/ns/other/deployments/shop-v2").status_code == 404  # out of scope


def test_a_foreign_host_is_refused(served: tuple[FakeBackend, str]) -> None:
    backend, base = served
    port = base.rsplit(":", 1)[1]
    for host in (f"evil.example:{port}", "127.0.0.1:1", "localhost"):
        answer = httpx.get(f"{base}/", headers={"Host": host})
        assert answer.status_code == 421, host
        assert "shop" not in answer.text
    answer = httpx.post(
        f"{base}/ns/prod/deployments/shop-v2/actions",
        data={"csrf": CSRF, "action": "abort", "confirmed": "1"},
        headers={"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"},
    )
    assert answer.status_code == 421 and backend.acted == []
    assert httpx.get(f"{base}/", headers={"Host": f"localhost:{port}"}).status_code == 200


def test_a_forged_post_changes_nothing(served: tuple[FakeBackend, str]) -> None:
    backend, base = served
    assert post(base, token=None).status_code == 403
    assert post(base, token="guessed").status_code == 403
    assert post(base, token="").status_code == 403
    foreign = post(base, origin="http://evil.example")
    assert foreign.status_code == 403 and "evil.example" in foreign.json()["message"]
    assert post(base, origin="null").status_code == 403
    assert post(base, origin=None).status_code == 403
    assert backend.acted == []


def test_an_unconfirmed_post_only_asks(served: tuple[FakeBackend, str]) -> None:
    backend, base = served
    answer = httpx.post(
        f"{base}/ns/prod/deployments/shop-v2/actions",
        data={"csrf": CSRF, "action": "promote"},
        headers={"Origin": base},
    )
    assert answer.status_code == 200 and "Please confirm" in answer.text
    assert 'name="confirmed" value="1"' in answer.text
    assert backend.acted == []


def test_a_confirmed_post_acts_once_and_says_what(served: tuple[FakeBackend, str]) -> None:
    backend, base = served
    answer = post(base, action="promote-full")
    assert answer.status_code == 200
    assert answer.json() == {"ok": True, "message": "promote-full requested for shop-v2"}
    assert backend.acted == [("prod", "shop-v2", "promote-full")]
    assert post(base, action="delete").status_code == 400
    assert backend.acted == [("prod", "shop-v2", "promote-full")]


def test_the_apis_refusal_is_shown_as_it_is(served: tuple[FakeBackend, str]) -> None:
    backend, base = served
    backend.fail_with = (
        'forbidden: no permission to patch deployments.lockgate.dev in namespace "prod". '
        'The API server said: deployments.lockgate.dev "shop-v2" is forbidden: User '
        '"viewer" cannot patch resource "deployments" in API group "lockgate.dev"'
    )
    answer = post(base)
    assert answer.status_code == 403
    assert answer.json() == {"ok": False, "message": backend.fail_with}


def test_live_updates_are_sent_as_events_from_the_watch(served: tuple[FakeBackend, str]) -> None:
    backend, base = served
    moved = json.loads(json.dumps(RUNNING))
    moved["metadata"]["resourceVersion"] = "8"
    moved["status"]["weights"] = {"stable": 50, "canary": 50}
    backend.feed["deployments"] = [
        Snapshot([RUNNING]),
        Change("MODIFIED", moved),
        Problem("watch forbidden"),
    ]
    raw = b""
    with httpx.stream("GET", f"{base}/ns/prod/deployments/shop-v2/events") as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        for chunk in answer.iter_bytes():
            raw += chunk
            if b"watch forbidden" in raw:
                break
    events = parse_sse(raw)
    assert [e.get("event") for e in events] == ["update", "update", "problem"]
    first, second = (json.loads(e["data"]) for e in events[:2])
    assert set(first) == {key for key, _ in view.DEPLOYMENT_SECTIONS}
    assert set(second) == {"weights"} and events[1]["id"] == "8"
    assert "50%" in second["weights"]
    assert json.loads(events[2]["data"]) == {"message": "watch forbidden"}


def test_the_list_updates_from_both_watches(served: tuple[FakeBackend, str]) -> None:
    backend, base = served
    backend.feed = {"applications": [Snapshot([APP])], "deployments": [Snapshot([RUNNING])]}
    raw = b""
    with httpx.stream("GET", f"{base}/events") as answer:
        for chunk in answer.iter_bytes():
            raw += chunk
            if b"shop-v2" in raw and b"Kubernetes, 4 replica" in raw:
                break
    updates = [json.loads(e["data"]) for e in parse_sse(raw) if e.get("event") == "update"]
    merged = {k: v for u in updates for k, v in u.items()}
    assert "shop-v2" in merged["deployments"] and "Kubernetes, 4" in merged["applications"]


# ------------------------------------------------------------------------------- the command


def test_only_loopback_addresses_count_as_loopback() -> None:
    from lockgate.cli.dashboard import is_loopback

    assert all(is_loopback(a) for a in ("127.0.0.1", "127.0.0.2", "::1", "localhost"))
    assert not any(is_loopback(a) for a in ("0.0.0.0", "::", "10.0.0.5", "example.org"))


@pytest.mark.parametrize(("address", "warned"), [("127.0.0.1", False), ("0.0.0.0", True)])
def test_a_non_loopback_address_is_served_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], address: str, warned: bool
) -> None:
    from lockgate.cli import dashboard, kubectl
    from lockgate.cli.main import main

    class Server:
        def serve_forever(self) -> None:
            raise KeyboardInterrupt

        def server_close(self) -> None:
            pass

    def fake_server(settings: Settings) -> Server:
        settings.port = 4321
        return Server()

    monkeypatch.setattr(dashboard, "connect", lambda args, light: kubectl.Target("prod", "fake"))
    monkeypatch.setattr(dashboard, "make_server", fake_server)
    assert main(["dashboard", "--address", address, "--port", "0"]) == 0
    out, err = capsys.readouterr()
    assert f"lockgate dashboard for namespace prod at http://{address}:4321/" in out
    assert ("warning: serving on 0.0.0.0, not loopback" in err) is warned


def test_without_javascript_a_confirmed_form_answers_with_a_page(
    served: tuple[FakeBackend, str],
) -> None:
    backend, base = served
    answer = httpx.post(
        f"{base}/ns/prod/deployments/shop-v2/actions",
        data={"csrf": CSRF, "action": "pause", "confirmed": "1"},
        headers={"Origin": base},
    )
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    assert "pause requested for shop-v2" in answer.text
    assert '<a href="/ns/prod/deployments/shop-v2">Back</a>' in answer.text
    assert backend.acted == [("prod", "shop-v2", "pause")]
