"""`parafuse serve` as curl sees it: the raw HTTP of every endpoint in the contract
(/work/notes/serve-contract.md), with no client library in between: status codes, content
types, the server-sent event framing of a stream ("data: ...\\n\\n", then "data: [DONE]"),
the chat page at /, Prometheus metrics and JSON errors.

    python3 tests/serve/test_curl.py   (PF_BINARY=build/parafuse; needs curl)
"""
import json
import shutil
import subprocess
import sys
import tempfile
import unittest

import serve_fixture

server = None  # serve_fixture.Server, set by main()
PROMPT = "The capital of France is"


def curl(path, *args, body=None):
    """Runs `curl -sS URL args...` (with the JSON body POSTed when given) and returns
    (HTTP status, content type, response body as text)."""
    with tempfile.NamedTemporaryFile() as out:
        command = ["curl", "-sS", "--max-time", "120", "-o", out.name,
                   "-w", "%{http_code} %{content_type}", server.base_url + path, *args]
        if body is not None:
            command += ["-H", "Content-Type: application/json",
                        "--data-binary", body if isinstance(body, str) else json.dumps(body)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed: {result.stderr.strip()}")
        status, _, content_type = result.stdout.partition(" ")
        return int(status), content_type, out.read().decode("utf-8")


def sse_events(text):
    """The data fields of a text/event-stream body, checking its framing on the way."""
    assert text.endswith("\n\n"), f"stream does not end with a blank line: {text[-80:]!r}"
    events = text.split("\n\n")[:-1]
    for event in events:
        assert event.startswith("data: "), f"event without 'data: ': {event!r}"
    return [event[len("data: "):] for event in events]


class Curl(unittest.TestCase):
    def assertJsonError(self, status, content_type, text, expected_status):
        self.assertEqual(status, expected_status, text)
        self.assertIn("application/json", content_type)
        error = json.loads(text)["error"]
        self.assertIsInstance(error["message"], str)
        self.assertTrue(error["message"])

    def test_health_and_ready(self):
        self.assertEqual(curl("/health")[0], 200)
        self.assertEqual(curl("/ready")[0], 200)

    def test_version(self):
        status, content_type, text = curl("/version")
        self.assertEqual(status, 200)
        self.assertTrue(json.loads(text)["version"])

    def test_models(self):
        status, content_type, text = curl("/v1/models")
        self.assertEqual(status, 200)
        self.assertIn("application/json", content_type)
        models = json.loads(text)
        self.assertEqual(models["object"], "list")
        self.assertEqual([m["id"] for m in models["data"]], [server.model])
        self.assertEqual(models["data"][0]["owned_by"], "parafuse")
        self.assertGreater(models["data"][0]["max_model_len"], 0)

    def test_metrics(self):
        status, content_type, text = curl("/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(content_type.startswith("text/plain"), content_type)
        self.assertIn("parafuse:num_requests_running", text)

    def test_chat_page(self):
        status, content_type, text = curl("/")
        self.assertEqual(status, 200)
        self.assertTrue(content_type.startswith("text/html"), content_type)
        self.assertIn('id="prompt"', text)
        self.assertIn('id="send"', text)

    def completion(self, **extra):
        request = {"model": server.model, "prompt": PROMPT, "max_tokens": 8, "temperature": 0}
        return curl("/v1/completions", body=dict(request, **extra))

    def test_completion(self):
        status, content_type, text = self.completion()
        self.assertEqual(status, 200, text)
        self.assertIn("application/json", content_type)
        response = json.loads(text)
        self.assertEqual(response["object"], "text_completion")
        self.assertEqual(response["model"], server.model)
        self.assertTrue(response["choices"][0]["text"])
        self.assertIn(response["choices"][0]["finish_reason"], ("stop", "length"))
        self.assertEqual(response["usage"]["completion_tokens"], 8)

    def test_completion_stream(self):
        status, content_type, text = self.completion(stream=True)
        self.assertEqual(status, 200, text)
        self.assertTrue(content_type.startswith("text/event-stream"), content_type)
        events = sse_events(text)
        self.assertEqual(events[-1], "[DONE]")
        chunks = [json.loads(data) for data in events[:-1]]
        self.assertTrue(chunks)
        for chunk in chunks:
            self.assertEqual(chunk["object"], "text_completion")
        streamed = "".join(chunk["choices"][0]["text"] for chunk in chunks)
        self.assertEqual(chunks[-1]["choices"][0]["finish_reason"], "length")
        whole = json.loads(self.completion()[2])["choices"][0]["text"]
        self.assertEqual(streamed, whole)

    def test_chat_stream_with_curl_n(self):
        # curl -N: no output buffering, as a user watching tokens arrive would run it.
        request = {"model": server.model, "stream": True, "max_tokens": 16, "temperature": 0,
                   "messages": [{"role": "user", "content": "What is the capital of France?"}]}
        status, content_type, text = curl("/v1/chat/completions", "-N", body=request)
        self.assertEqual(status, 200, text)
        self.assertTrue(text.endswith("data: [DONE]\n\n"), text[-200:])
        chunks = [json.loads(data) for data in sse_events(text)[:-1]]
        self.assertEqual(chunks[0]["object"], "chat.completion.chunk")
        self.assertEqual(chunks[0]["choices"][0]["delta"].get("role"), "assistant")
        answer = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        self.assertIn("Paris", answer)

    def test_errors(self):
        self.assertJsonError(*curl("/v1/completions", body="{not json"), 400)
        self.assertJsonError(*curl("/v1/completions", body={"model": server.model}), 400)
        self.assertJsonError(*curl("/v1/no-such-endpoint"), 404)
        self.assertJsonError(*curl("/v1/completions"), 405)  # GET where only POST is served


def main():
    if not shutil.which("curl"):
        serve_fixture.skip("no curl (cluster/setup.sh installs it)")
    serve_fixture.require_model()
    args = serve_fixture.parse_args()

    def set_server(started):
        global server
        server = started

    return serve_fixture.run_test_cases(set_server, args.server_args, args.mpirun)


if __name__ == "__main__":
    sys.exit(main())
