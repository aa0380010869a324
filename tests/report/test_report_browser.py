"""The report in a real browser: headless Chromium renders it, every image decodes, no console errors, screenshot taken.

Driven over the Chrome DevTools Protocol (websocket-client). Skipped when Debian's chromium is not installed.
"""

import base64
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from atomtune.report import render_report

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", "--window-size=1280,2400"]


class DevTools:
    def __init__(self, url: str):
        import websocket

        self.socket = websocket.create_connection(url, timeout=30)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params):
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(message["error"])
                return message["result"]
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(e.get("method") == method for e in self.events):
                return
            self.events.append(json.loads(self.socket.recv()))
        raise TimeoutError(method)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed (scripts/setup.sh installs it)")
def test_report_renders_in_headless_chromium(campaign_results, tmp_path):
    pytest.importorskip("websocket")
    report = render_report(campaign_results, tmp_path / "report.html")
    profile = tmp_path / "profile"
    process = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        for _ in range(300):
            if port_file.exists() and port_file.read_text().strip():
                break
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        pages = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        page = next(p for p in pages if p["type"] == "page")
        tools = DevTools(page["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log"):
            tools.call(f"{domain}.enable")
        tools.call("Page.navigate", url=report.as_uri())
        tools.wait_for("Page.loadEventFired")
        check = tools.call("Runtime.evaluate", returnByValue=True, expression="""({
            sections: ['summary','data','errors','finetune','scans','tasks','task-eos','failures']
                .filter(id => document.getElementById(id) !== null),
            images: Array.from(document.images).map(img => img.complete && img.naturalWidth > 0),
            verdict: document.querySelector('#summary').innerText,
        })""")["result"]["value"]
        shot = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        (tmp_path / "report.png").write_bytes(base64.b64decode(shot["data"]))
        errors = [e for e in tools.events
                  if e.get("method") == "Runtime.exceptionThrown"
                  or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
                  or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
    finally:
        process.kill()
        process.wait()
    assert check["sections"] == ["summary", "data", "errors", "finetune", "scans", "tasks", "task-eos", "failures"]
    assert len(check["images"]) == 5 and all(check["images"])
    assert "chgnet-0.3.0+lora" in check["verdict"]
    assert errors == []
    assert (tmp_path / "report.png").stat().st_size > 20_000
