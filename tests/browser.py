"""A real headless Chromium (Debian's), driven over the DevTools protocol with websocket-client.

`chromium()` installs it with web/install_chromium.sh when it is absent (as the tests' other engines are
set up on first use), starts it with a fresh profile and yields a `Browser`. No WebDriver: the DevTools
protocol is Chromium's own and needs nothing but the websocket client already in the lock.
"""

import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "web" / "install_chromium.sh"

# Flags that make a headless Chromium work in a container with no GPU and no network.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--mute-audio",
    "--window-size=1000,900",
)


def executable() -> str:
    """The Chromium binary; installed first when missing."""
    if shutil.which("chromium") is None:
        subprocess.run(["bash", str(INSTALL)], check=True)
    # The Debian launcher script only adds flags from /etc/chromium.d; the binary itself starts faster.
    binary = Path("/usr/lib/chromium/chromium")
    return str(binary) if binary.exists() else shutil.which("chromium")


class BrowserError(RuntimeError):
    pass


class Browser:
    def __init__(self, websocket_url: str):
        import websocket

        self._socket = websocket.create_connection(websocket_url, timeout=120, suppress_origin=True)
        self._ids = itertools.count(1)
        self.console: list[str] = []
        self.requests: dict[
            str, dict
        ] = {}  # DevTools request id -> what came back (record_network)
        self.call("Runtime.enable")
        self.call("Page.enable")

    def call(self, method: str, **params):
        message_id = next(self._ids)
        self._socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._socket.recv())
            if message.get("method") == "Runtime.consoleAPICalled":
                self.console.append(
                    " ".join(
                        str(a.get("value", a.get("description", "")))
                        for a in message["params"]["args"]
                    )
                )
            elif message.get("method") == "Runtime.exceptionThrown":
                self.console.append(json.dumps(message["params"]["exceptionDetails"])[:2000])
            elif message.get("method") in self._NETWORK_EVENTS:
                self._network_event(message["method"], message["params"])
            if message.get("id") == message_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message["result"]

    def record_network(self) -> None:
        """From now on, every response's URL, Content-Encoding, bytes on the wire and unpacked bytes (transfers())."""
        self.requests.clear()
        self.call("Network.enable")

    _NETWORK_EVENTS = (
        "Network.responseReceived",
        "Network.dataReceived",
        "Network.loadingFinished",
    )

    def _network_event(self, method: str, params: dict) -> None:
        request = self.requests.setdefault(
            params["requestId"], {"body_bytes": 0, "wire_bytes": None}
        )
        if method == "Network.responseReceived":
            response = params["response"]
            headers = {name.lower(): value for name, value in response.get("headers", {}).items()}
            request.update(
                url=response["url"],
                status=response["status"],
                encoding=headers.get("content-encoding"),
            )
        elif method == "Network.dataReceived":
            request["body_bytes"] += params["dataLength"]  # unpacked (decoded) bytes
        elif method == "Network.loadingFinished":
            request["wire_bytes"] = params[
                "encodedDataLength"
            ]  # as received: headers and the encoded body

    def transfers(self) -> list[dict]:
        """The finished responses since record_network: url, status, encoding, wire_bytes, body_bytes."""
        return [r for r in self.requests.values() if "url" in r and r["wire_bytes"] is not None]

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str):
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 120.0, interval: float = 0.25):
        """The first truthy value of `expression`; BrowserError with the page's state on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except BrowserError:
                value = None  # the page is still navigating
            if value:
                return value
            if time.monotonic() > deadline:
                state = self.evaluate("JSON.stringify(window.poseDemo || null)")
                raise BrowserError(
                    f"timed out after {timeout:.0f} s waiting for {expression}; page state {state}; "
                    f"console: {self.console[-10:]}"
                )
            time.sleep(interval)

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self):
        self._socket.close()


@contextlib.contextmanager
def chromium(*extra_flags: str, timeout: float = 60.0):
    """A started headless Chromium with a fresh profile; yields a Browser on its first tab."""
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
    log = open(profile.parent / f"{profile.name}.log", "wb")  # noqa: SIM115 (Popen writes it; closed on exit)
    process = subprocess.Popen(
        [
            executable(),
            *FLAGS,
            *extra_flags,
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "about:blank",
        ],
        stdout=log,
        stderr=log,
    )
    browser = None
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if process.poll() is not None or time.monotonic() > deadline:
                log.flush()
                raise BrowserError(f"chromium did not start: {Path(log.name).read_text()[-2000:]}")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            targets = json.load(response)
        [page] = [t for t in targets if t["type"] == "page"]
        browser = Browser(page["webSocketDebuggerUrl"])
        yield browser
    finally:
        if browser is not None:
            browser.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(profile, ignore_errors=True)
        Path(log.name).unlink(missing_ok=True)
