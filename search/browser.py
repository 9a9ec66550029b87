"""A headless Chromium driven over its DevTools protocol: open a page, run
JavaScript in it, take a screenshot of the whole page. search.report's
--screenshot uses it, and the tests check the report's DOM with it.

Needs a Chromium binary (Debian: apt install chromium) and websocket-client.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import websocket

#: Flags for a browser with no display, no sandbox (containers, CI), and no network chatter.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-extensions", "--disable-sync", "--no-first-run", "--no-default-browser-check", "--mute-audio",
         "--hide-scrollbars")
BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def group_running(pgid: int) -> bool:
    """Whether a process of the process group is running (not a zombie):
    from /proc on Linux, else whether the group can still be signalled."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[2] == str(pgid) and fields[0] != "Z":  # state, ppid, pgrp, ...
            return True
    return False


class BrowserError(RuntimeError):
    """No browser, or it did not answer."""


def find_chromium() -> str | None:
    return next((found for name in BINARIES if (found := shutil.which(name))), None)


class Page:
    """One tab of a headless Chromium; use as a context manager."""

    def __init__(self, width: int = 1400, height: int = 1000, timeout: float = 30.0):
        self.width, self.height, self.timeout = width, height, timeout
        self._ids = itertools.count(1)
        self._socket = None

    def __enter__(self) -> "Page":
        binary = find_chromium()
        if binary is None:
            raise BrowserError("no Chromium found: install it (Debian: apt install chromium)")
        self.profile = Path(tempfile.mkdtemp(prefix="nucjax-chromium-"))
        # Its own session, so closing it reaches the helper processes too (a bare
        # terminate of the browser can leave zygotes and renderers behind).
        self.process = subprocess.Popen(
            [binary, *FLAGS, "--remote-debugging-port=0", f"--user-data-dir={self.profile}",
             f"--window-size={self.width},{self.height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            self._socket = self._connect(self._page_socket_url(self._devtools_port()))
            self.call("Emulation.setDeviceMetricsOverride",
                      {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False})
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _devtools_port(self) -> int:
        """Chromium prints 'DevTools listening on ws://127.0.0.1:PORT/...' on stderr."""
        deadline = time.monotonic() + self.timeout
        seen = []
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line and self.process.poll() is not None:
                break
            seen.append(line)
            if "DevTools listening on ws://" in line:
                return int(line.split("ws://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        raise BrowserError("Chromium did not start: " + "".join(seen[-5:]).strip())

    def _page_socket_url(self, port: int) -> str:
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5).read())
                return next(t for t in targets if t.get("type") == "page")["webSocketDebuggerUrl"]
            except (OSError, StopIteration, ValueError):
                if time.monotonic() > deadline:
                    raise BrowserError("Chromium opened no page") from None
                time.sleep(0.1)

    def _connect(self, url: str) -> websocket.WebSocket:
        """The page's DevTools socket, opened with no Origin header.

        Chromium 111+ rejects a DevTools handshake whose Origin it was not told to
        allow, and checks nothing when there is none (a client that is not a web
        page sends none). Sending none keeps the browser's default: no page it
        loads may drive it, which --remote-allow-origins=* would allow.
        """
        try:
            return websocket.create_connection(url, timeout=self.timeout, suppress_origin=True)
        except (OSError, websocket.WebSocketException) as error:
            raise BrowserError(f"Chromium refused the DevTools connection: {error}") from error

    def __exit__(self, *exc) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self.process.poll() is None:
            self._signal_browser(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self._signal_browser(signal.SIGKILL)
                self.process.wait(10)
        self._signal_browser(signal.SIGKILL)  # helpers that outlived the browser
        # A killed helper lives on for a moment (it is not ours to wait for):
        # wait until the group has none running, so no caller sees it.
        deadline = time.monotonic() + 5
        while group_running(self.process.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.process.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def _signal_browser(self, signum: int) -> None:
        try:
            os.killpg(self.process.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def call(self, method: str, params: dict | None = None) -> dict:
        """Send one DevTools command and return its result (events in between are dropped)."""
        message_id = next(self._ids)
        self._socket.send(json.dumps({"id": message_id, "method": method, "params": params or {}}))
        while True:
            reply = json.loads(self._socket.recv())
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} threw: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def open(self, url: str) -> float:
        """Load url and wait until it and its images have loaded; returns the
        seconds from navigation start to the load event."""
        self.call("Page.navigate", {"url": url})
        deadline = time.monotonic() + self.timeout
        while self.evaluate("document.readyState") != "complete" or self.evaluate("location.href") != url:
            if time.monotonic() > deadline:
                raise BrowserError(f"{url} did not finish loading in {self.timeout:g} s")
            time.sleep(0.05)
        timing = self.evaluate("JSON.stringify(performance.getEntriesByType('navigation')[0])")
        entry = json.loads(timing) if timing else {}
        return float(entry.get("loadEventEnd", 0.0)) / 1000

    def screenshot(self, path: Path) -> Path:
        """The whole page (not just the window) as a PNG."""
        height = int(self.evaluate("Math.ceil(document.documentElement.scrollHeight)"))
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": self.width, "height": max(height, 1), "deviceScaleFactor": 1, "mobile": False})
        shot = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        path = Path(path)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path
