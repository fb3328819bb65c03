"""A tiny Chrome DevTools Protocol client: headless Chromium driven over one WebSocket.

`Browser()` starts the system Chromium (Debian package `chromium`) with
`--remote-debugging-port=0`, reads the port from its "DevTools listening on ws://..." line,
and attaches to its page. What the dashboard tests need and nothing more: navigate, evaluate
JavaScript, wait for a condition, type text, read cookies, take a screenshot.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

PACKAGE = "chromium"  # the Debian package
NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-background-networking", "--disable-gpu",
         "--no-first-run", "--no-default-browser-check", "--disable-extensions",
         "--disable-dev-shm-usage", "--window-size=1400,1000", "--remote-debugging-port=0")


def chromium_path() -> str | None:
    return next((p for p in map(shutil.which, NAMES) if p), None)


class BrowserError(AssertionError):
    pass


class Browser:
    def __init__(self, timeout: float = 30.0) -> None:
        exe = chromium_path()
        if exe is None:
            raise BrowserError(f"No Chromium found: install the Debian package '{PACKAGE}' "
                               f"(apt-get install -y --no-install-recommends {PACKAGE}).")
        self._profile = tempfile.mkdtemp(prefix="faregate-chromium-")
        self.proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.stderr: list[str] = []
        port = self._devtools_port(timeout)
        threading.Thread(target=self._drain, daemon=True).start()
        self.port = port
        page = self._page_target(port, timeout)
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(page, max_size=None, open_timeout=timeout))
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        self.call("Page.enable")
        self.call("Network.enable")

    def _devtools_port(self, timeout: float) -> int:
        assert self.proc.stderr is not None
        found: list[int] = []

        def read() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.stderr.append(line)
                m = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
                if m:
                    found.append(int(m.group(1)))
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        if not found:
            self.close()
            raise BrowserError("Chromium did not start:\n" + "".join(self.stderr[-30:]))
        return found[0]

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        with contextlib.suppress(ValueError, OSError):
            for line in self.proc.stderr:
                self.stderr.append(line)

    @staticmethod
    def _page_target(port: int, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as resp:
                pages = [t for t in json.loads(resp.read()) if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
            if time.monotonic() > deadline:
                raise BrowserError("Chromium has no page target")
            time.sleep(0.1)

    # -- protocol ---------------------------------------------------------------------------------

    def call(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        """Send one command and return its result (events that arrive meanwhile are kept)."""
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"{method}: no answer within {timeout}s")
            msg = json.loads(self.ws.recv(timeout=left))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise BrowserError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_event(self, name: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if event["method"] == name:
                    del self.events[: i + 1]
                    return event.get("params", {})
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"no {name} within {timeout}s")
            with contextlib.suppress(TimeoutError):
                msg = json.loads(self.ws.recv(timeout=min(left, 0.5)))
                if "method" in msg:
                    self.events.append(msg)

    # -- what tests use ---------------------------------------------------------------------------

    def goto(self, url: str, timeout: float = 30.0) -> None:
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired", timeout)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited), as JSON."""
        out = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in out:
            details = out["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"JavaScript error in {expression!r}: {text}")
        return out.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 20.0) -> Any:
        """Poll until the expression is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(BrowserError):  # e.g. evaluated while the page navigates
                value = self.evaluate(expression)
                if value:
                    return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out after {timeout}s waiting for: {expression}\n"
                                   f"page: {self.evaluate('location.href')}")
            time.sleep(0.1)

    def type_into(self, selector: str, text: str) -> None:
        """Focus an input and type into it (as a user would: no JavaScript holds the text)."""
        self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        self.call("Input.insertText", text=text)

    def click(self, selector: str) -> None:
        self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")

    def cookies(self, url: str) -> list[dict[str, Any]]:
        return self.call("Network.getCookies", urls=[url])["cookies"]

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stack.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
