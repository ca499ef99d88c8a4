"""Ctrl-C drains: a stream that is running when SIGINT comes finishes all its tokens
(finish_reason "length"), a request arriving meanwhile gets 503 with the OpenAI error shape,
/ready says 503 and /health 200, and the server then exits 0.
"""
import json
import os
import signal
import sys
import threading
import time

from http_client import request, stream
from serve_fixture import BINARY, MODEL, Process, parse_args, require_model


def main():
    parse_args()
    require_model()
    server = Process([BINARY, "serve", "-m", MODEL, "--port", "0", "-q"],
                     r"serving (\S+) on (http://\S+)", "parafuse serve",
                     dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    ok = False
    try:
        url = server.wait_ready(120).group(2)
        result = {}

        def client():
            body = {"prompt": "Count:", "max_tokens": 40, "temperature": 0, "ignore_eos": True,
                    "stream_options": {"include_usage": True}}
            result["events"], _ = stream(url, "/v1/completions", body)

        t = threading.Thread(target=client)
        t.start()
        # Wait until the stream is running, then Ctrl-C the server (its process only).
        running = f'parafuse:num_requests_running{{model_name="{server.match.group(1)}"}} 1'
        while running not in request(url, "GET", "/metrics")[1]:
            time.sleep(0.02)
        os.kill(server.proc.pid, signal.SIGINT)
        # The signal is handled asynchronously by the server's event loop: a request sent
        # before it has been handled is (rightly) still served. /ready flips to 503 once it is.
        deadline = time.monotonic() + 10
        while request(url, "GET", "/ready")[0] != 503:
            assert time.monotonic() < deadline, "/ready still 200 10 s after SIGINT"
            time.sleep(0.01)
        status, body = request(url, "POST", "/v1/completions", {"prompt": "late", "max_tokens": 2})
        assert status == 503, (status, body)
        assert body["error"]["code"] == "shutting_down", body
        assert request(url, "GET", "/health")[0] == 200
        t.join(60)
        events = result["events"]
        finish = [e["choices"][0]["finish_reason"] for e in events if e["choices"]][-1]
        usage = events[-1]["usage"]
        assert finish == "length" and usage["completion_tokens"] == 40, (finish, usage)
        code = server.proc.wait(30)
        assert code == 0, f"exit code {code} after SIGINT"
        print(f"drained: the running stream finished its 40 tokens ({finish}); a late request "
              f"got 503 {json.dumps(body['error']['message'])}; exit {code}")
        ok = True
    finally:
        server.stop()
        if not ok:
            server.print_log()


if __name__ == "__main__":
    sys.exit(main())
