"""Open a local HTML file in headless Chromium and report what a person would see: a full-page screenshot, every
<img>'s natural size, console errors and uncaught exceptions, and every URL the page asked for. Pure Chrome
DevTools Protocol over --remote-debugging-pipe (NUL-terminated JSON on fds 3 and 4): no driver package."""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--hide-scrollbars",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--mute-audio",
    "--remote-debugging-pipe",
]


def find_chromium() -> str | None:
    for name in NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class _Pipe:
    """The CDP connection: commands out on the browser's fd 3, replies and events in from its fd 4."""

    def __init__(self, to_browser: int, from_browser: int):
        self.w, self.r = to_browser, from_browser
        self.buf = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def _read_one(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.r], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self.r, 1 << 20)
            if not chunk:
                raise ConnectionError("Chromium closed the DevTools pipe")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(
        self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 10.0
    ) -> dict[str, Any]:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_one(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for ev in self.events:
            if ev.get("method") == method:
                return ev
        while True:
            ev = self._read_one(deadline)
            self.events.append(ev)
            if ev.get("method") == method:
                return ev


def _above_4(fd: int) -> int:
    import fcntl

    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


_IMAGES_JS = (
    "JSON.stringify({height: document.documentElement.scrollHeight, images: Array.from(document.images)"
    ".map(i => ({src: i.src.slice(0, 40), complete: i.complete, naturalWidth: i.naturalWidth}))})"
)


def render(
    html_paths: list[Path], width: int = 1280, timeout: float = 20.0, max_height: int = 12000
) -> list[dict[str, Any]]:
    """Load each file in turn in one browser; per file {screenshot: PNG bytes, height, images: [{src, complete,
    naturalWidth}], errors: [console errors and exceptions], requests: [every URL asked for]}."""
    binary = find_chromium()
    if binary is None:
        raise FileNotFoundError("no chromium binary")
    a_r, a_w = os.pipe()  # us -> browser (its fd 3)
    b_r, b_w = os.pipe()  # browser -> us (its fd 4)
    a_r, b_w = _above_4(a_r), _above_4(b_w)  # else "3<&3 3<&-" would close the very end the browser needs
    profile = tempfile.mkdtemp(prefix="ed-chromium-")
    # bash (dash takes one-digit fds only) puts the pipe ends on fds 3 and 4, where --remote-debugging-pipe expects them
    cmd = [
        "bash",
        "-c",
        f'exec "$0" "$@" 3<&{a_r} 4>&{b_w} {a_r}<&- {b_w}>&-',
        binary,
        *FLAGS,
        f"--user-data-dir={profile}",
        f"--window-size={width},900",
        "about:blank",
    ]
    proc = subprocess.Popen(cmd, pass_fds=(a_r, b_w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(a_r)
    os.close(b_w)
    cdp = _Pipe(a_w, b_r)
    try:
        targets = cdp.call("Target.getTargets", timeout=timeout)["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        sid = cdp.call("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            cdp.call(f"{domain}.enable", session=sid)
        results = [_load(cdp, sid, Path(p), width, timeout, max_height) for p in html_paths]
        try:
            cdp.call("Browser.close", timeout=5)
        except (ConnectionError, TimeoutError):
            pass
        return results
    finally:
        os.close(a_w)
        os.close(b_r)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def _load(cdp: _Pipe, sid: str, path: Path, width: int, timeout: float, max_height: int) -> dict[str, Any]:
    cdp.events.clear()  # only what this page does counts
    cdp.call(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False},
        session=sid,
    )
    cdp.call("Page.navigate", {"url": path.resolve().as_uri()}, session=sid)
    cdp.wait_event("Page.loadEventFired", timeout=timeout)
    info = json.loads(
        cdp.call("Runtime.evaluate", {"expression": _IMAGES_JS, "returnByValue": True}, session=sid)["result"]["value"]
    )
    height = min(int(info["height"]), max_height)
    cdp.call(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        session=sid,
    )
    shot = base64.b64decode(cdp.call("Page.captureScreenshot", {"format": "png"}, session=sid, timeout=timeout)["data"])
    errors, requests = [], []
    for ev in cdp.events:
        method, p = ev.get("method"), ev.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            errors.append(p.get("exceptionDetails", {}).get("text", "exception"))
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            errors.append(p["entry"].get("text", ""))
        elif method == "Network.requestWillBeSent":
            requests.append(p.get("request", {}).get("url", ""))
    return {"screenshot": shot, "height": height, "images": info["images"], "errors": errors, "requests": requests}
