"""`kubectl lockgate dashboard` in a real browser (Debian's chromium, headless, over the
DevTools protocol) against the local control plane, the real operator and Traefik under load.

Screenshots of the list and of the live view are saved in the directory printed at the start
of the run (LOCKGATE_SCREENSHOTS, else a temporary directory)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from hack.tools.load import Load, failed
from tests.support.browser import Browser, Page
from tests.support.cluster import Cluster, Traefik
from tests.support.rollouts import (
    Lockgate,
    application,
    cpu_ticks,
    deployment,
    host_of,
    wait_for,
)

pytestmark = pytest.mark.integration

ANALYSIS = {"intervalSeconds": 2, "minRequests": 10, "maxConsecutiveFailures": 2}
# A timed pause between the weights, so the page is seen at 20% for a while; then a pause
# only a promote ends.
LIVE = {
    "type": "Canary",
    "canary": {
        "steps": [
            {"setWeight": 20},
            {"pause": {"seconds": 6}},
            {"setWeight": 50},
            {"pause": {}},
            {"setWeight": 100},
        ]
    },
}
MANUAL = {
    "type": "Canary",
    "canary": {"steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}]},
}


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Path:
    chosen = os.environ.get("LOCKGATE_SCREENSHOTS")
    path = Path(chosen) if chosen else tmp_path_factory.mktemp("dashboard-screenshots")
    path.mkdir(parents=True, exist_ok=True)
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"dashboard screenshots: {path}")
    return path


@contextmanager
def dashboard(
    cluster: Cluster, namespace: str, tmp_path: Path, kubeconfig: Path | None = None
) -> Iterator[str]:
    """`kubectl lockgate dashboard -n NAMESPACE --port 0` as a user runs it; its URL."""
    env = cluster.env()
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    out, err = tmp_path / "dashboard.out", tmp_path / "dashboard.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(
            [str(cluster.kubectl_path), "lockgate", "dashboard", "-n", namespace, "--port", "0"],
            env=env,
            stdout=stdout,
            stderr=stderr,
            text=True,
        )
    try:

        def started() -> str | None:
            if proc.poll() is not None:
                raise AssertionError(f"the dashboard exited: {err.read_text()}")
            found = re.search(r" at (http://127\.0\.0\.1:\d+/)$", out.read_text(), re.M)
            return found.group(1) if found else None

        yield wait_for("the dashboard to listen", started, lambda: cpu_ticks(proc.pid))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def deploy_v1(lg: Lockgate) -> None:
    lg.create(application("shop", 2, namespace=lg.namespace))
    lg.create(deployment("shop-v1", "shop", "demo:v1"))
    lg.wait_phase("shop-v1", {"Succeeded"})


APP_ROW = "#s-applications tbody tr"


def shown(page: Page) -> tuple[str | None, str | None, str | None]:
    """(phase, step, canary weight) as the page shows them now."""
    return (
        page.text("#s-summary [data-phase]"),
        page.text('[data-field="step"]'),
        page.text('[data-field="canary"]'),
    )


def stage(lg: Lockgate, name: str) -> tuple[Any, ...]:
    """Where Deployment `name`'s rollout stands: what a dashboard page shows of it follows
    this. Not the whole status: at a pause under analysis that changes every analysis
    interval for as long as the pause lasts, and a wait on it would never give up."""
    status = lg.status(name)
    return tuple(status.get(k) for k in ("phase", "message", "step", "weights", "pendingAction"))


def following(page: Page, lg: Lockgate, name: str) -> Callable[[], Any]:
    """Progress of a wait on the live view of Deployment `name`: where its rollout stands and
    what the page shows of it (the page's own count of updates, like every message it gets,
    grows at each analysis run of a pause, so it is left out)."""
    return lambda: (stage(lg, name), shown(page))


def confirm(page: Page, action: str, keyboard: bool = False) -> str:
    """Click the action's button, then Confirm in the dialog (or, with `keyboard`, focus the
    button, Enter, Tab from Cancel to Confirm, Enter); the result line's text."""
    page.evaluate("document.getElementById('result').textContent = ''")
    button = f'button[data-action="{action}"]'
    if keyboard:
        page.evaluate(f"document.querySelector('{button}').focus()")
        page.press("Enter")
    else:
        page.click(button)
    dialog_open = "document.getElementById('confirm').open"
    # The click's handler fills the dialog's text and opens it: nothing else feeds it.
    wait_for(
        "the confirmation dialog",
        lambda: page.evaluate(dialog_open),
        lambda: page.text("#confirm-text"),
    )
    text = page.text("#confirm-text") or ""
    assert action.split("-")[0] in text.lower(), text
    if keyboard:
        assert page.evaluate("document.activeElement.id") == "confirm-no"  # the safe choice
        page.press("Tab")
        assert page.evaluate("document.activeElement.id") == "confirm-yes"
        page.press("Enter")
    else:
        page.click("#confirm-yes")

    def answered() -> str | None:
        now = (page.text("#result") or "").strip()
        return now if now and not now.startswith("sending") else None

    # The dashboard's answer to the page's POST: what the page shows and has been answered.
    result: str = wait_for(
        f"the answer to {action}", answered, lambda: (page.text("#result"), page.answered())
    )
    return result


def test_live_canary_under_load_step_and_weight_change_without_reload_and_promote(
    cluster: Cluster,
    traefik: Traefik,
    lockgate: Lockgate,
    browser: Browser,
    screenshots: Path,
    tmp_path: Path,
) -> None:
    ns = lockgate.namespace
    deploy_v1(lockgate)
    page = browser.new_page()
    with dashboard(cluster, ns, tmp_path) as url:
        with Load(traefik.web_url, host_of("shop", ns)) as load:
            load.wait_answered(20)
            lockgate.create(deployment("shop-v2", "shop", "demo:v2", LIVE, analysis=ANALYSIS))
            live_url = f"{url}ns/{ns}/deployments/shop-v2"
            page.open(live_url)
            page.evaluate("window.lockgateMarker = 'loaded once'")
            navigations = page.navigations()
            requests_before = len(page.events("Network.requestWillBeSent"))
            seen: list[tuple[str | None, str | None, str | None]] = []

            def at_the_manual_pause() -> bool:
                now = shown(page)
                if not seen or seen[-1] != now:
                    seen.append(now)
                return (
                    now[0] == "Paused"
                    and now[2] == "50%"
                    and "pause until promote" in (now[1] or "")
                )

            wait_for(
                "the page to show the manual pause at 50%",
                at_the_manual_pause,
                following(page, lockgate, "shop-v2"),
            )
            weights = [w for _, _, w in seen]
            steps = {s for _, s, _ in seen if s}
            assert "20%" in weights and weights.index("20%") < weights.index("50%"), seen
            assert len(steps) >= 3, seen
            # no reload: the same document, one navigation, and nothing asked of the server
            # but the event stream
            assert page.evaluate("window.lockgateMarker") == "loaded once"
            assert page.navigations() == navigations
            assert int(page.evaluate("document.body.dataset.updates || 0")) >= 3
            asked = set(page.requests_since(requests_before)) - {f"{url}favicon.ico"}
            assert asked <= {f"{live_url}/events"}, asked
            assert page.text("#live-state") == "live"
            current = page.text('.timeline [aria-current="step"] .desc')
            assert current == "pause until promote", current

            def charts() -> int:
                return int(page.evaluate("document.querySelectorAll('figure.chart').length"))

            # Fed by the analysis runs recorded (a bounded list: it stops growing once full).
            wait_for(
                "an analysis chart",
                lambda: charts() >= 2,
                lambda: (charts(), len(lockgate.status("shop-v2").get("analysis") or [])),
            )
            live_shot = page.screenshot(screenshots / "dashboard-live.png")
            # the list, in another tab, while the rollout waits
            listing = browser.new_page()
            listing.open(url)
            listing_navigations = listing.navigations()
            # The list's own watch replays every object when it starts; until the Deployment's
            # event has come, its row may show the rollout as Pending for a moment.
            row = wait_for(
                "the list to show the paused rollout",
                lambda: (
                    text
                    if "shop-v2 Paused step 5/8 pause until promote, canary 50%"
                    in (text := listing.text(APP_ROW) or "")
                    else None
                ),
                lambda: (listing.text(APP_ROW), stage(lockgate, "shop-v2")),
            )
            assert "Kubernetes, 2 replica(s)" in row and "demo:v1 from shop-v1" in row, row
            list_shot = listing.screenshot(screenshots / "dashboard-list.png")
            assert listing.console_errors() == []

            result = confirm(page, "promote")
            assert "promote requested for shop-v2 (it was Paused)" in result, result
            status = lockgate.wait_phase("shop-v2", {"Succeeded", "RolledBack", "Failed"})
            assert status["phase"] == "Succeeded", status.get("message")
            wait_for(
                "the page to show Succeeded",
                lambda: shown(page)[0] == "Succeeded",
                following(page, lockgate, "shop-v2"),
            )
            assert shown(page)[2] == "0%"
            assert page.navigations() == navigations
            log = page.text('[data-live="log"]') or ""
            assert "promoted past step 5: pause until promote" in log, log
            responses = load.stop()
            assert failed(responses) == []

        # the list, live in its tab: the new version is stable, no rollout is active (the row
        # is the Application's, fed by its status)
        wait_for(
            "the list to show demo:v2 stable and no active rollout",
            lambda: (
                "demo:v2 from shop-v2" in (row := listing.text(APP_ROW) or "") and "none" in row
            ),
            lambda: (
                listing.text(APP_ROW),
                lockgate.get("shop", "applications").get("status"),
            ),
        )
        assert listing.navigations() == listing_navigations  # updated live, not reloaded
        assert page.console_errors() == [] and listing.console_errors() == []
        # A stream cut by a change of the host's network (`Page.network_changes`) is taken up again.
        for tab in (page, listing):
            wait_for(
                "the page's event stream to be live",
                lambda tab=tab: tab.text("#live-state") == "live",
                lambda tab=tab: (tab.text("#live-state"), tab.network_changes()),
            )
        assert live_shot.stat().st_size > 10_000 and list_shot.stat().st_size > 5_000


def test_abort_rolls_back_and_forged_requests_change_nothing(
    cluster: Cluster, lockgate: Lockgate, browser: Browser, tmp_path: Path
) -> None:
    ns = lockgate.namespace
    deploy_v1(lockgate)
    lockgate.create(deployment("shop-v2", "shop", "demo:v2", MANUAL))
    page = browser.new_page()
    with dashboard(cluster, ns, tmp_path) as url:
        live_url = f"{url}ns/{ns}/deployments/shop-v2"
        page.open(live_url)
        wait_for(
            "the page to show Paused",
            lambda: shown(page)[0] == "Paused",
            following(page, lockgate, "shop-v2"),
        )

        # a forged POST: without the token, or from another origin with it, changes nothing
        token = page.evaluate("document.querySelector('meta[name=csrf-token]').content")
        actions = f"{live_url}/actions"
        body = {"action": "abort", "confirmed": "1"}
        without = httpx.post(actions, data=body, headers={"Origin": url.rstrip("/")})
        foreign = httpx.post(
            actions, data={**body, "csrf": token}, headers={"Origin": "http://evil.example"}
        )
        assert (without.status_code, foreign.status_code) == (403, 403)
        obj = lockgate.get("shop-v2")
        assert "lockgate.dev/action" not in (obj["metadata"].get("annotations") or {})
        assert obj["status"]["phase"] == "Paused"

        result = confirm(page, "abort", keyboard=True)
        assert "abort requested for shop-v2 (it was Paused)" in result, result
        status = lockgate.wait_phase("shop-v2", {"Aborted", "RolledBack", "Succeeded"})
        assert status["phase"] == "Aborted", status.get("message")
        wait_for(
            "the page to show Aborted",
            lambda: shown(page)[0] == "Aborted",
            following(page, lockgate, "shop-v2"),
        )
        assert page.text('[data-field="stable"]') == "100%"
        assert "rolled back to demo:v1" in (page.text('[data-field="message"]') or "")
        assert (
            page.evaluate("document.querySelector('button[data-action=retry]').disabled") is False
        )
    assert lockgate.get("shop", "applications")["status"]["stable"]["image"] == "demo:v1"


def read_only_kubeconfig(cluster: Cluster, lg: Lockgate, path: Path) -> Path:
    """A ServiceAccount that may get, list and watch lockgate's objects, and nothing else."""
    import yaml

    ns = lg.namespace
    core, rbac = client.CoreV1Api(lg.api), client.RbacAuthorizationV1Api(lg.api)
    core.create_namespaced_service_account(ns, {"metadata": {"name": "viewer"}})
    rules: list[dict[str, Any]] = [
        {
            "apiGroups": ["lockgate.dev"],
            "resources": ["deployments", "applications"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    rbac.create_namespaced_role(ns, {"metadata": {"name": "viewer"}, "rules": rules})
    rbac.create_namespaced_role_binding(
        ns,
        {
            "metadata": {"name": "viewer"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "viewer"},
            "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": ns}],
        },
    )
    token = cluster.kubectl("create", "token", "viewer", "-n", ns, "--duration", "10m")
    assert token.returncode == 0, token.stderr
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": "viewer", "user": {"token": token.stdout.strip()}}],
        "contexts": [
            {
                "name": "viewer",
                "context": {
                    "cluster": admin["clusters"][0]["name"],
                    "user": "viewer",
                    "namespace": ns,
                },
            }
        ],
        "current-context": "viewer",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def test_a_read_only_user_sees_the_actions_refused_with_the_apis_reason(
    cluster: Cluster, lockgate: Lockgate, browser: Browser, tmp_path: Path
) -> None:
    ns = lockgate.namespace
    # no Application: the Deployment stays Pending, where abort is a meaningful request
    lockgate.create(deployment("shop-v1", "shop", "demo:v1"))
    kubeconfig = read_only_kubeconfig(cluster, lockgate, tmp_path / "viewer.kubeconfig")
    page = browser.new_page()
    with dashboard(cluster, ns, tmp_path, kubeconfig) as url:

        def shows_the_deployment() -> bool:
            page.open(url)
            return "shop-v1" in (page.text("#s-deployments") or "")

        # The API server's authorization cache takes up the new binding on its own schedule,
        # with nothing to watch on the way: the progress is its answer, the section's text
        # (the refusal it shows until then). Not the API server's CPU time: the polling
        # itself, and every other test of the run, keep that moving.
        wait_for(
            "the role binding to take effect",
            shows_the_deployment,
            lambda: page.text("#s-deployments"),
        )
        page.open(f"{url}ns/{ns}/deployments/shop-v1")
        # The page's event stream connecting: the server's answer to it.
        wait_for(
            "the live view",
            lambda: page.text("#live-state") == "live",
            lambda: (page.text("#live-state"), page.answered()),
        )
        for action in ("abort", "pause"):
            result = confirm(page, action)
            assert result.startswith(
                f'forbidden: no permission to patch deployments.lockgate.dev in namespace "{ns}".'
            ), result
            assert f'User "system:serviceaccount:{ns}:viewer" cannot patch resource' in result
            assert 'resource "deployments" in API group "lockgate.dev"' in result
        assert page.evaluate("document.querySelector('#result p').className") == "error"
    obj = lockgate.get("shop-v1")
    assert "lockgate.dev/action" not in (obj["metadata"].get("annotations") or {})
    assert not obj["spec"].get("paused")
