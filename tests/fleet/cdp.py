"""A headless Chromium driven over the DevTools protocol: navigate, run a script, read the page.

For what `--dump-dom` cannot do: a session that lives across navigations (log in, then visit
another site, then come back), and the page's Content-Security-Policy violations.
"""

import asyncio
import contextlib
import itertools
import json
import re
import subprocess
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import httpx
import websockets

from tests.support.browser import FLAGS, chromium

# every page records what its Content-Security-Policy blocked (injected by DevTools: CSP-exempt)
RECORD_CSP = """
window.__csp = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__csp.push(e.effectiveDirective + " " + e.blockedURI));
"""


class Page:
    def __init__(self, socket: Any) -> None:
        self.socket = socket
        self.ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        await self.socket.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:  # events in between are not needed: state is read back with `evaluate`
            message = json.loads(await asyncio.wait_for(self.socket.recv(), 60))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"script failed: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    async def goto(self, url: str) -> None:
        await self.call("Page.navigate", url=url)

    async def wait_for(self, expression: str, what: str, deadline_s: float = 60) -> Any:
        """Poll until `expression` is truthy (the deadline is for a stuck page, not a speed test)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        while True:
            with contextlib.suppress(RuntimeError):  # mid-navigation: no context to run in
                value = await self.evaluate(expression)
                if value:
                    return value
            if loop.time() > end:
                raise TimeoutError(f"the page never showed {what}")
            await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def browser_page() -> AsyncIterator[Page]:
    """One tab of a fresh headless Chromium profile."""
    with tempfile.TemporaryDirectory(prefix="chromium-cdp-") as profile:
        process = await asyncio.create_subprocess_exec(
            chromium(), *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank",
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert process.stderr is not None
        try:
            port = await _devtools_port(process.stderr)
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(_discard(process.stderr))  # a full pipe would stall chromium
                async with httpx.AsyncClient() as http:
                    target = (await http.put(f"http://127.0.0.1:{port}/json/new?about:blank")).json()
                async with websockets.connect(target["webSocketDebuggerUrl"], max_size=None) as socket:
                    page = Page(socket)
                    await page.call("Page.enable")
                    await page.call("Page.addScriptToEvaluateOnNewDocument", source=RECORD_CSP)
                    yield page
                process.kill()  # ends the discarding task (end of stream)
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()


async def _devtools_port(stderr: asyncio.StreamReader) -> int:
    while True:
        line = await asyncio.wait_for(stderr.readline(), 60)
        if not line:
            raise RuntimeError("chromium exited before it listened for DevTools")
        found = re.search(rb"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
        if found:
            return int(found.group(1))


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass
