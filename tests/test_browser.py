"""search.browser against the current Chromium's rules: a DevTools client that
sends no Origin header, and a browser that is gone, profile and helpers
included, whatever failed while it started."""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
from pathlib import Path

import pytest
import websocket

from search import browser

needs_chromium = pytest.mark.skipif(browser.find_chromium() is None, reason="no Chromium (.ci/run installs it)")

#: What Chromium 111+ answers a DevTools handshake from an origin it was not told to allow.
REJECTION = ("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")


def strict_devtools_server() -> tuple[str, list[str]]:
    """A one-connection WebSocket server that, like Chromium, refuses any handshake
    carrying an Origin header; returns its URL and the request lines it received."""
    server = socket.create_server(("127.0.0.1", 0))
    received: list[str] = []

    def serve():
        connection, _ = server.accept()
        with connection, server:
            request = b""
            while b"\r\n\r\n" not in request:
                request += connection.recv(4096)
            received.extend(request.decode().split("\r\n"))
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in received[1:])}
            if "origin" in headers:
                connection.sendall(REJECTION.encode())
                return
            accept = base64.b64encode(hashlib.sha1(
                (headers["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
            connection.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())

    threading.Thread(target=serve, daemon=True).start()
    return f"ws://127.0.0.1:{server.getsockname()[1]}/devtools/page/X", received


def test_the_devtools_handshake_carries_no_origin_so_a_strict_browser_accepts_it():
    url, received = strict_devtools_server()
    connection = browser.Page(timeout=10)._connect(url)
    connection.close()
    assert received[0].startswith("GET /devtools/page/X")
    assert not any(line.lower().startswith("origin:") for line in received)


def browser_processes(profile: Path) -> list[int]:
    """Pids of the processes (browser and helpers) running with this profile folder."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(profile).encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@needs_chromium
def test_a_refused_devtools_connection_leaves_no_browser_behind(monkeypatch):
    def refuse(url, **options):
        raise websocket.WebSocketBadStatusException("Handshake status %d %s", 403, "Forbidden")

    monkeypatch.setattr(browser.websocket, "create_connection", refuse)
    page = browser.Page(timeout=20)
    with pytest.raises(browser.BrowserError, match="refused the DevTools connection"):
        page.__enter__()
    assert page.process.poll() is not None
    assert not page.profile.exists()
    assert browser_processes(page.profile) == []


@needs_chromium
def test_a_browser_that_opens_no_page_leaves_nothing_behind(monkeypatch):
    def no_page(self, port):
        raise browser.BrowserError("Chromium opened no page")

    monkeypatch.setattr(browser.Page, "_page_socket_url", no_page)
    page = browser.Page(timeout=20)
    with pytest.raises(browser.BrowserError, match="opened no page"):
        page.__enter__()
    assert page.process.poll() is not None and not page.profile.exists()
    assert browser_processes(page.profile) == []


def test_a_process_group_is_running_until_its_last_process_is_gone():
    import subprocess

    child = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        assert browser.group_running(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not browser.group_running(child.pid)
