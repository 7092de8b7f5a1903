"""Headless Chromium driven over the Chrome DevTools Protocol (CDP) on a `websockets` connection.

Only what the operator-page test needs: open a page, evaluate script, wait for a condition in the
page (a MutationObserver, not a poll), click with the mouse, answer a dialog, take a screenshot.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import websockets

ROOT = Path(__file__).resolve().parents[2]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio", "--remote-debugging-port=0"]
WIDTH, HEIGHT = 1280, 1000


def find_chromium() -> tuple[str | None, str]:
    """The browser's path, installing it once with scripts/install-browser when missing; else why not."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found, ""
    try:
        done = subprocess.run([str(ROOT / "scripts" / "install-browser")], capture_output=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"scripts/install-browser failed: {exc}"
    found = shutil.which("chromium")
    return found, "" if found else f"no chromium after scripts/install-browser ({done.returncode}): " \
                                   f"{done.stderr.decode(errors='replace')[-500:]}"


class CdpError(Exception):
    pass


class Browser:
    def __init__(self, proc: asyncio.subprocess.Process, ws: Any, stderr_head: list[str]) -> None:
        self.proc = proc
        self.ws = ws
        self.stderr_tail: collections.deque[str] = collections.deque(stderr_head, maxlen=200)  # for diagnosis
        self.events: list[dict[str, Any]] = []  # every event received, for assertions afterwards
        self._ids = itertools.count(1)
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._waiters: list[tuple[str, Callable[[dict[str, Any]], bool], asyncio.Future[dict[str, Any]]]] = []
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def launch(cls, executable: str, workdir: Path) -> Browser:
        profile = workdir / "profile"
        profile.mkdir()
        proc = await asyncio.create_subprocess_exec(
            executable, *FLAGS, f"--window-size={WIDTH},{HEIGHT}", f"--user-data-dir={profile}",
            "about:blank", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True)  # its own process group: teardown ends the renderers with it
        assert proc.stderr is not None
        seen: list[str] = []
        match = None
        try:
            async with asyncio.timeout(30):
                while not match:
                    line = (await proc.stderr.readline()).decode(errors="replace")
                    if not line:
                        raise CdpError("chromium exited: " + "".join(seen)[-2000:])
                    seen.append(line)
                    match = re.search(r"DevTools listening on (ws://\S+)", line)
            ws = await websockets.connect(match.group(1), max_size=64 * 1024 * 1024, open_timeout=10)
        except BaseException:
            await _kill(proc)
            raise
        browser = cls(proc, ws, seen)
        browser._drain = asyncio.create_task(browser._keep_reading_stderr())
        return browser

    async def _keep_reading_stderr(self) -> None:
        """A full stderr pipe would stall the browser; its last lines are kept for diagnosis."""
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.stderr_tail.append(line.decode(errors="replace"))

    async def _read(self) -> None:
        async for raw in self.ws:
            message = json.loads(raw)
            if "id" in message:
                future = self._replies.pop(message["id"], None)
                if future and not future.done():
                    future.set_result(message)
                continue
            self.events.append(message)
            for waiter in list(self._waiters):
                method, predicate, future = waiter
                if message.get("method") == method and predicate(message.get("params", {})):
                    self._waiters.remove(waiter)
                    if not future.done():
                        future.set_result(message.get("params", {}))

    def expect(self, method: str, predicate: Callable[[dict[str, Any]], bool] = lambda p: True
               ) -> asyncio.Future[dict[str, Any]]:
        """A future for the next event `method` whose params satisfy `predicate` (register before acting)."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.append((method, predicate, future))
        return future

    async def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
                   timeout: float = 15) -> dict[str, Any]:
        message_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[message_id] = future
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        await self.ws.send(json.dumps(message))
        async with asyncio.timeout(timeout):
            reply = await future
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error']}")
        return reply["result"]

    async def new_page(self) -> Page:
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        page = Page(self, attached["sessionId"])
        for domain in ("Page", "Runtime", "Log"):
            await page.send(f"{domain}.enable")
        await page.send("Emulation.setDeviceMetricsOverride",
                        {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False})
        return page

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.send("Browser.close", timeout=5)
        with contextlib.suppress(Exception):
            await self.ws.close()
        self._reader.cancel()
        await _kill(self.proc)
        self._drain.cancel()


async def _kill(proc: asyncio.subprocess.Process) -> None:
    """End the browser and every process it started (they share its process group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            async with asyncio.timeout(5):
                await proc.wait()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # renderers outliving the browser process
            return
        except TimeoutError:
            continue


class Page:
    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session

    async def send(self, method: str, params: dict[str, Any] | None = None,
                   timeout: float = 15) -> dict[str, Any]:
        return await self.browser.send(method, params, self.session, timeout)

    def expect(self, method: str, predicate: Callable[[dict[str, Any]], bool] = lambda p: True
               ) -> asyncio.Future[dict[str, Any]]:
        return self.browser.expect(method, predicate)

    async def navigate(self, url: str) -> None:
        loaded = self.expect("Page.loadEventFired")
        result = await self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CdpError(f"navigate {url}: {result['errorText']}")
        async with asyncio.timeout(15):
            await loaded

    async def evaluate(self, expression: str, timeout: float = 15) -> Any:
        result = await self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                      "returnByValue": True}, timeout)
        if "exceptionDetails" in result:
            raise CdpError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, condition: str, timeout: float = 10) -> None:
        """Resolve once the JS expression `condition` is true, re-checked at every DOM change."""
        await self.evaluate(f"""new Promise(resolve => {{
            const ok = () => {{ try {{ return !!({condition}); }} catch (e) {{ return false; }} }};
            if (ok()) return resolve(true);
            new MutationObserver((_, observer) => {{ if (ok()) {{ observer.disconnect(); resolve(true); }} }})
                .observe(document, {{childList: true, subtree: true, characterData: true, attributes: true}});
        }})""", timeout)

    async def click(self, selector: str) -> asyncio.Task[Any]:
        """Click the element's centre with the mouse; returns the release, which a dialog holds open."""
        box = await self.evaluate(f"""(() => {{ const r = document.querySelector({json.dumps(selector)})
            .getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()""")
        x, y = box
        base = {"x": x, "y": y, "button": "left", "clickCount": 1}
        await self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})
        await self.send("Input.dispatchMouseEvent", {"type": "mousePressed", **base})
        return asyncio.create_task(self.send("Input.dispatchMouseEvent", {"type": "mouseReleased", **base}))

    async def screenshot(self, path: Path) -> Path:
        shot = await self.send("Page.captureScreenshot", {"format": "png"})
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))
        return path


def png_info(data: bytes) -> tuple[int, int, int]:
    """(width, height, distinct byte values in the pixel data) of a well-formed 8-bit RGB(A) PNG.

    Checks the signature, every chunk's CRC, and that the pixel data inflates to exactly the size the
    header promises; raises ValueError otherwise.
    """
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("not a PNG signature")
    offset, idat, header = 8, b"", None
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        chunk = data[offset + 8:offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length:offset + 12 + length])
        if zlib.crc32(kind + chunk) != crc:
            raise ValueError(f"bad CRC in {kind!r}")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        elif kind == b"IEND":
            break
        offset += 12 + length
    if header is None or header[2] != 8 or header[3] not in (2, 6):
        raise ValueError(f"unexpected PNG header {header}")
    width, height, _, colour = header[:4]
    pixels = zlib.decompress(idat)
    if len(pixels) != height * (1 + width * (3 if colour == 2 else 4)):
        raise ValueError("pixel data does not match the header")
    return width, height, len(set(pixels))
