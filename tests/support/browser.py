"""A real browser for tests: Debian's chromium (installed by hack/chromium when missing), run
headless and driven over the Chrome DevTools Protocol on its websocket, with the
websocket-client the kubernetes client already brings (no browser download, no new
dependency)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import websocket

from tests.support.cluster import REPO_ROOT
from tests.support.rollouts import cpu_ticks, wait_for

NETWORK_CHANGED = "net::ERR_NETWORK_CHANGED"


def chromium_path() -> str:
    """The browser's executable, installed through the project's own script when missing."""
    found = shutil.which("chromium")
    if found:
        return found
    proc = subprocess.run(
        [str(REPO_ROOT / "hack/chromium"), "path"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"hack/chromium could not install chromium:\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]


class CDPError(RuntimeError):
    pass


@dataclass
class Browser:
    """One headless chromium and its DevTools connection."""

    process: subprocess.Popen[bytes]
    ws: websocket.WebSocket
    log_path: Path
    events: list[dict[str, Any]] = field(default_factory=list)
    _answers: dict[int, dict[str, Any]] = field(default_factory=dict)
    _next: int = 0
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _closed: bool = False

    @classmethod
    def start(cls, executable: str, profile: Path) -> Browser:
        profile.mkdir(parents=True, exist_ok=True)
        log_path = profile / "chromium.log"
        port_file = profile / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)  # a previous run's, naming a port now closed
        flags = [
            "--headless=new",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--window-size=1280,900",
        ]
        if os.geteuid() == 0:
            flags.append("--no-sandbox")  # chromium refuses to run as root with its sandbox
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [executable, *flags, "about:blank"], stdout=log, stderr=subprocess.STDOUT
            )

        def ready() -> list[str] | None:
            if process.poll() is not None:
                raise AssertionError(f"chromium exited: {log_path.read_text(errors='replace')}")
            lines = port_file.read_text().split() if port_file.exists() else []
            return lines if len(lines) >= 2 else None

        # Chromium writes the port once it has started: until then, its own CPU time moves.
        port, path = wait_for("chromium's DevTools port", ready, lambda: cpu_ticks(process.pid))
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{port}{path}", suppress_origin=True, timeout=None
        )
        browser = cls(process, ws, log_path)
        threading.Thread(target=browser._read, daemon=True).start()
        return browser

    def _read(self) -> None:
        while True:
            try:
                message = json.loads(self.ws.recv())
            except (websocket.WebSocketException, OSError, ValueError):
                with self._cond:
                    self._closed = True
                    self._cond.notify_all()
                return
            with self._cond:
                if "id" in message:
                    self._answers[message["id"]] = message
                else:
                    self.events.append(message)
                self._cond.notify_all()

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        with self._cond:
            self._next += 1
            ident = self._next
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        with self._cond:
            while ident not in self._answers:
                if self._closed:
                    raise CDPError(f"{method}: the browser went away")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CDPError(f"{method}: no answer within {timeout:g}s")
                self._cond.wait(left)
            answer = self._answers.pop(ident)
        if "error" in answer:
            raise CDPError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result") or {}
        return result

    def new_page(self, width: int = 1280, height: int = 900) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        page = Page(self, session, target)
        for domain in ("Page", "Runtime", "Network", "Log"):
            page.send(f"{domain}.enable")
        page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        return page

    def close(self) -> None:
        with contextlib.suppress(CDPError):
            self.send("Browser.close", timeout=5)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.ws.close()


@dataclass
class Page:
    browser: Browser
    session: str
    target: str

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.browser.send(method, params, self.session)

    def events(self, method: str) -> list[dict[str, Any]]:
        with self.browser._cond:
            return [
                e["params"]
                for e in self.browser.events
                if e.get("sessionId") == self.session and e.get("method") == method
            ]

    def answered(self) -> int:
        """Answers the page has had so far (responses, and loads finished): what a page being
        loaded or waiting on a request moves on. Neither the event streams' data nor their
        failed reconnections count: the dashboard's keep-alives, and an EventSource retrying a
        server that is gone, keep coming whether or not anything else happens."""
        return len(self.events("Network.responseReceived")) + len(
            self.events("Network.loadingFinished")
        )

    def navigations(self) -> int:
        """Main-frame navigations so far (a reload is one)."""
        return sum(1 for p in self.events("Page.frameNavigated") if not p["frame"].get("parentId"))

    def open(self, url: str) -> None:
        loads = len(self.events("Page.loadEventFired"))
        answer = self.send("Page.navigate", {"url": url})
        if answer.get("errorText"):
            raise CDPError(f"navigate to {url}: {answer['errorText']}")
        wait_for(
            f"{url} to load", lambda: len(self.events("Page.loadEventFired")) > loads, self.answered
        )

    def evaluate(self, expression: str) -> Any:
        answer = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in answer:
            raise CDPError(f"{expression}: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def text(self, selector: str) -> str | None:
        value = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
            "return e ? e.textContent : null; })()"
        )
        return None if value is None else str(value)

    def click(self, selector: str) -> None:
        """A real mouse click (pressed, released) at the middle of the element."""
        box = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
            "if (!e) return null; e.scrollIntoView({block: 'center'}); "
            "const r = e.getBoundingClientRect(); "
            "return {x: r.left + r.width / 2, y: r.top + r.height / 2, w: r.width}; })()"
        )
        if not box or not box["w"]:
            raise CDPError(f"nothing to click at {selector}")
        self.send("Page.bringToFront")  # input goes to the tab in front
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": box["x"], "y": box["y"], "button": "left", "clickCount": 1},
            )

    def press(self, key: str) -> None:
        """A key press (Enter, Tab, Escape ...) where the focus is."""
        codes = {"Enter": 13, "Tab": 9, "Escape": 27}
        self.send("Page.bringToFront")  # input goes to the tab in front
        for kind in ("keyDown", "keyUp"):
            self.send(
                "Input.dispatchKeyEvent",
                {
                    "type": kind,
                    "key": key,
                    "code": key,
                    "windowsVirtualKeyCode": codes.get(key, 0),
                    "text": "\r" if key == "Enter" and kind == "keyDown" else "",
                },
            )

    def screenshot(self, path: Path) -> Path:
        """The whole page, beyond the viewport, as PNG."""
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        shot = self.send(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {
                    "x": 0,
                    "y": 0,
                    "width": size["width"],
                    "height": size["height"],
                    "scale": 1,
                },
            },
        )
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def network_changes(self) -> int:
        """How many of the page's requests chromium cut with net::ERR_NETWORK_CHANGED. Chromium
        does so when the host's interfaces or their addresses change, and while the suite runs
        they do: the process kubelet adds a veth pair for every Pod it starts, Docker one for
        every container. So another test's Pod can cut a long-lived request (the live view's
        event stream). A user's browser does the same when their network changes; what counts
        is that the page reconnects."""
        return sum(
            NETWORK_CHANGED in p["entry"].get("text", "") for p in self.events("Log.entryAdded")
        )

    def requests_since(self, index: int) -> list[str]:
        return [p["request"]["url"] for p in self.events("Network.requestWillBeSent")[index:]]

    def console_errors(self) -> list[str]:
        """The page's errors, but for requests chromium cut because the host's network changed
        (see `network_changes`)."""
        found = [
            text
            for p in self.events("Log.entryAdded")
            if p["entry"].get("level") == "error"
            and NETWORK_CHANGED not in (text := p["entry"].get("text", ""))
        ]
        found += [
            str(p["exceptionDetails"].get("exception", {}).get("description"))
            for p in self.events("Runtime.exceptionThrown")
        ]
        return found


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    started = Browser.start(chromium_path(), tmp_path_factory.mktemp("chromium"))
    try:
        yield started
    finally:
        started.close()
