"""Load a page in a real headless Chromium (Debian's ``chromium``) through the DevTools protocol,
for tests of the HTML report: console errors, uncaught exceptions and requests that leave the
machine are collected, a script is evaluated in the loaded page, and a full-page screenshot taken.

The protocol runs over a WebSocket; tornado's client (a dependency of the notebook test stack) talks
it. Chromium writes the port it picked (``--remote-debugging-port=0``) to DevToolsActivePort in its
profile directory, which this waits for.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pxq.testing.retry import remove_until_deadline

# URL schemes a self-contained page may load; anything else is a request off the machine.
LOCAL_SCHEMES = ("file:", "data:", "about:", "blob:", "chrome:", "devtools:")


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class PageLoad:
    console_errors: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)
    value: Any = None  # what ``expression`` evaluated to
    ready: bool = False  # whether ``ready_expression`` became true in time


class _Session:
    def __init__(self, connection) -> None:
        self.connection = connection
        self.next_id = 0
        self.events: list[dict] = []

    async def call(self, method: str, params: dict | None = None, timeout: float = 30.0) -> dict:
        self.next_id += 1
        wanted = self.next_id
        await self.connection.write_message(json.dumps({"id": wanted, "method": method, "params": params or {}}))
        while True:
            message = await self._read(timeout)
            if message.get("id") == wanted:
                if "error" in message:
                    raise RuntimeError(f"DevTools {method}: {message['error']}")
                return message.get("result", {})

    async def _read(self, timeout: float) -> dict:
        raw = await asyncio.wait_for(self.connection.read_message(), timeout)
        if raw is None:
            raise RuntimeError("Chromium closed the DevTools connection")
        message = json.loads(raw)
        if "method" in message:
            self.events.append(message)
        return message

    async def wait_event(self, method: str, timeout: float) -> None:
        if any(e["method"] == method for e in self.events):
            return
        deadline = time.monotonic() + timeout
        while True:
            message = await self._read(max(0.1, deadline - time.monotonic()))
            if message.get("method") == method:
                return

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"evaluating {expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")


def _errors(events: list[dict]) -> tuple[list[str], list[str]]:
    errors, external = [], []
    for event in events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            errors.append(details.get("exception", {}).get("description") or details.get("text", "exception"))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            errors.append(params["entry"].get("text", ""))
        elif method == "Network.requestWillBeSent":
            url = params.get("request", {}).get("url", "")
            if not url.startswith(LOCAL_SCHEMES):
                external.append(url)
    return errors, external


async def _drive(
    port: int, url: str, expression: str, ready_expression: str, screenshot: Path | None, width: int, timeout: float
) -> PageLoad:
    from tornado.websocket import websocket_connect

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
        targets = json.load(response)
    page = next(t for t in targets if t.get("type") == "page")
    connection = await websocket_connect(page["webSocketDebuggerUrl"], max_message_size=512 * 1024 * 1024)
    session = _Session(connection)
    try:
        for domain in ("Runtime", "Log", "Network", "Page"):
            await session.call(f"{domain}.enable")
        metrics = {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}
        await session.call("Emulation.setDeviceMetricsOverride", metrics)
        await session.call("Page.navigate", {"url": url})
        await session.wait_event("Page.loadEventFired", timeout)
        load = PageLoad()
        deadline = time.monotonic() + timeout
        while True:
            load.ready = bool(await session.evaluate(ready_expression))
            if load.ready or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        load.value = await session.evaluate(expression)
        if screenshot is not None:
            height = int(await session.evaluate("document.documentElement.scrollHeight"))
            await session.call("Emulation.setDeviceMetricsOverride", {**metrics, "height": max(height, 200)})
            # Charts re-layout to the new viewport (plotly is responsive): wait for two frames to settle.
            await session.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
            shot = await session.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        load.console_errors, load.external_requests = _errors(session.events)
        return load
    finally:
        connection.close()


def load_page(
    path: Path,
    *,
    expression: str = "null",
    ready_expression: str = "true",
    screenshot: Path | None = None,
    width: int = 1400,
    timeout: float = 30.0,
) -> PageLoad:
    """Open ``path`` from file:// in headless Chromium; wait until ``ready_expression`` is true
    (or ``timeout``); return the console errors, requests off the machine and ``expression``'s value."""
    binary = chromium_binary()
    if binary is None:
        raise RuntimeError("chromium is not installed (tools/setup.sh installs it)")
    profile = tempfile.mkdtemp(prefix="pxq-chromium-")
    try:
        log = open(Path(profile) / "chromium.log", "wb")  # noqa: SIM115 - closed below, after the process
        process = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",  # tests run as root, where Chromium's sandbox refuses to start
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,  # its zygote, renderers and crashpad handler: one group to stop
        )
        try:
            active = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + timeout
            while not (active.exists() and active.read_text().strip()):
                if process.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    tail = (Path(profile) / "chromium.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"chromium did not start its DevTools server:\n{tail}")
                time.sleep(0.05)
            port = int(active.read_text().split()[0])
            url = path.resolve().as_uri()
            return asyncio.run(_drive(port, url, expression, ready_expression, screenshot, width, timeout))
        finally:
            _stop_group(process)
            log.close()
    finally:
        _remove_profile(profile)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stop Chromium and every process it started (they write into the profile directory until
    they are gone: removing it earlier fails with 'Directory not empty')."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)
    deadline = time.monotonic() + 10
    while True:
        try:
            os.killpg(process.pid, signal.SIGKILL if time.monotonic() > deadline else 0)
        except ProcessLookupError:
            break  # no process of the group is left
        if time.monotonic() > deadline + 5:
            break
        time.sleep(0.05)
    if process.poll() is None:
        process.kill()
        process.wait()


def _remove_profile(profile: str) -> None:
    """Remove the profile directory; a process outside the group (none known) still writing in it
    gets a few tries before the error is raised."""
    remove_until_deadline(lambda: shutil.rmtree(profile), timeout=10, interval=0.1)
