"""The chat page (GET /, runtime/serve/chat.html) in headless Chromium, as a user drives it.

Types "What is the capital of France?", clicks Send, waits for the streamed answer
(body[data-state=done]), asks a follow-up with Enter (the page resends the history), then
saves a screenshot and checks the answers, the tokens/s status line, that the page raised no
JavaScript error and that it fetched nothing from outside the server; last, that a request the
server refuses shows the server's error message. Chromium is driven over
the DevTools protocol (websocket-client from .cache/venv), no Selenium.

    .cache/venv/bin/python tests/serve/test_chat_page.py [--screenshot PNG]
"""
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import sys
import tempfile
import urllib.request

import serve_fixture

try:
    import websocket  # websocket-client
except ImportError:
    serve_fixture.skip("no websocket-client: run cluster/setup.sh (it makes .cache/venv)")

QUESTION = "What is the capital of France?"
FOLLOW_UP = "And of Italy?"
TIMEOUT = 120  # seconds for one answer


class DevTools:
    """One page target over the Chrome DevTools protocol: commands get their answer by id; the
    events that arrive meanwhile are kept in `events`."""

    def __init__(self, websocket_url):
        self.socket = websocket.create_connection(websocket_url, timeout=TIMEOUT,
                                                  suppress_origin=True)
        self.ids = itertools.count(1)
        self.events = []

    def send(self, method, **params):
        message_id = next(self.ids)
        self.socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self.events.append(message)

    def evaluate(self, expression):
        """The value of a JavaScript expression; awaits it when it is a promise."""
        result = self.send("Runtime.evaluate", expression=expression, awaitPromise=True,
                           returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, condition):
        """Waits inside the page until the JavaScript `condition` is true (checked every 50 ms
        by the page itself; an exception counts as false), at most TIMEOUT seconds."""
        return self.evaluate(f"""new Promise((resolve, reject) => {{
            const deadline = performance.now() + {TIMEOUT * 1000};
            (function check() {{
              let met = false;
              try {{ met = {condition}; }} catch (_) {{}}
              if (met) resolve(true);
              else if (performance.now() > deadline) reject(new Error({json.dumps(condition)}));
              else setTimeout(check, 50);
            }})();
          }})""")

    def click(self, selector):
        """A real mouse click in the middle of the element."""
        x, y = self.evaluate(f"""(() => {{
            const r = document.querySelector("{selector}").getBoundingClientRect();
            return [r.x + r.width / 2, r.y + r.height / 2]; }})()""")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left",
                      clickCount=1)

    def type_text(self, selector, text):
        self.evaluate(f'document.querySelector("{selector}").focus()')
        self.send("Input.insertText", text=text)

    def press_enter(self):
        for kind in ("keyDown", "keyUp"):
            self.send("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter",
                      windowsVirtualKeyCode=13, text="\r" if kind == "keyDown" else "")


@contextlib.contextmanager
def chromium(url):
    """Headless Chromium; yields a DevTools connection to its page, loaded with `url`."""
    binary = shutil.which("chromium")
    with tempfile.TemporaryDirectory(prefix="pf-chromium-") as profile:
        browser = serve_fixture.Process(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions",
             "--disable-background-networking", "--remote-debugging-port=0",
             "--remote-allow-origins=*", f"--user-data-dir={profile}",
             "--window-size=1000,760", "about:blank"],
            r"DevTools listening on ws://([^/\s]+)/", "chromium")
        try:
            host = browser.wait_ready(60).group(1)
            with urllib.request.urlopen(f"http://{host}/json/list", timeout=30) as response:
                pages = [t for t in json.load(response) if t["type"] == "page"]
            page = DevTools(pages[0]["webSocketDebuggerUrl"])
            try:
                page.send("Page.enable")
                page.send("Runtime.enable")
                page.send("Network.enable")  # before the page loads: all its requests are seen
                page.send("Page.navigate", url=url)
                page.wait_for(f"location.href === {json.dumps(url)} && "
                              "document.readyState === 'complete'")
                yield page
            finally:
                page.socket.close()
        except BaseException:
            browser.print_log()
            raise
        finally:
            browser.stop(first_signal=signal.SIGTERM, grace=10)


def main():
    args = serve_fixture.parse_args(lambda parser: parser.add_argument(
        "--screenshot", default="serve-chat.png", help="where to save the page as PNG"))
    if not shutil.which("chromium"):
        serve_fixture.skip("no chromium (cluster/setup.sh installs Debian's chromium)")
    serve_fixture.require_model()

    with serve_fixture.serve(args.server_args, mpirun=args.mpirun) as server:
        with chromium(server.base_url + "/") as page:
            check_page(page, server, args.screenshot)
    print(f"ok: screenshot at {os.path.abspath(args.screenshot)}")
    return 0


def check_page(page, server, screenshot):
    page.wait_for(f"document.getElementById('model').textContent === {json.dumps(server.model)}")
    # Greedy answers: the screenshot shows the same text every run.
    page.evaluate("document.getElementById('temperature').value = '0'")
    page.evaluate("document.getElementById('max-tokens').value = '64'")

    page.type_text("#prompt", QUESTION)
    page.click("#send")
    answers_done = ("document.querySelectorAll('.msg.assistant').length === {n} && "
                    "['done', 'error'].includes(document.body.dataset.state)")
    page.wait_for(answers_done.format(n=1))
    state = page.evaluate("document.body.dataset.state")
    errors = page.evaluate("[...document.querySelectorAll('.msg.error')].map(e => e.textContent)")
    assert state == "done", f"state {state!r} after the first question; errors shown: {errors}"

    page.type_text("#prompt", FOLLOW_UP)
    page.press_enter()
    page.wait_for(answers_done.format(n=2))

    png = page.send("Page.captureScreenshot", format="png")["data"]
    with open(screenshot, "wb") as out:
        out.write(base64.b64decode(png))
    print(f"screenshot: {screenshot}")

    state = page.evaluate("document.body.dataset.state")
    answers = page.evaluate(
        "[...document.querySelectorAll('.msg.assistant')].map(e => e.textContent)")
    users = page.evaluate("[...document.querySelectorAll('.msg.user')].map(e => e.textContent)")
    status = page.evaluate("document.getElementById('status').textContent")
    errors = page.evaluate("[...document.querySelectorAll('.msg.error')].map(e => e.textContent)")
    print(f"state: {state}\nanswers: {answers}\nstatus line: {status}")
    assert state == "done", f"state {state!r} after the follow-up; errors shown: {errors}"
    assert users == [QUESTION, FOLLOW_UP], users
    assert len(answers) == 2 and all(a.strip() for a in answers), f"empty answer: {answers}"
    assert "Paris" in answers[0], f"first answer without Paris: {answers[0]!r}"
    assert "tokens/s" in status, f"no speed in the status line: {status!r}"
    assert page.evaluate("document.querySelector('#prompt').value") == "", "prompt not cleared"

    # Two requests carried the history: the second one must contain the first answer.
    requests = [e["params"]["request"] for e in page.events
                if e.get("method") == "Network.requestWillBeSent"]
    chats = [json.loads(r["postData"]) for r in requests
             if r["url"].endswith("/v1/chat/completions") and "postData" in r]
    assert len(chats) == 2, f"{len(chats)} chat requests"
    assert [m["role"] for m in chats[1]["messages"]] == ["user", "assistant", "user"], chats[1]
    assert chats[1]["messages"][1]["content"] == answers[0]
    outside = [r["url"] for r in requests if not r["url"].startswith(server.base_url)]
    assert not outside, f"the page fetched from outside the server: {outside}"
    thrown = [e["params"] for e in page.events if e.get("method") == "Runtime.exceptionThrown"]
    assert not thrown, f"JavaScript exceptions: {thrown}"

    # A request the server refuses (max_tokens -1): its {"error": {"message"}} is shown.
    page.evaluate("document.getElementById('max-tokens').value = '-1'")
    page.type_text("#prompt", "Hi")
    page.press_enter()
    page.wait_for("document.body.dataset.state === 'error'")
    errors = page.evaluate("[...document.querySelectorAll('.msg.error')].map(e => e.textContent)")
    print(f"error shown for max_tokens -1: {errors}")
    assert len(errors) == 1 and errors[0] and not errors[0].startswith("HTTP "), errors


if __name__ == "__main__":
    sys.exit(main())
