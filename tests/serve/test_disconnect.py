"""A client that goes away stops its generation: one that disconnects mid-stream, and one that
disconnects while waiting for a non-streaming answer. Each time the KV cache usage of every rank
(from /metrics) returns to its idle value and the request counts as finished_reason="abort".

  test_disconnect.py [--mpirun "mpirun -np 2 ..." --server-args "--pp 2"]
"""
import json
import socket
import sys
import time
import urllib.parse

from http_client import kv_usage, metrics
from serve_fixture import parse_args, require_model, serve


def open_request(base_url, body):
    u = urllib.parse.urlparse(base_url)
    s = socket.create_connection((u.hostname, u.port), timeout=60)
    data = json.dumps(body).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
    return s


def wait_until(what, condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def aborted(base_url):
    return metrics(base_url).get(
        next(k for k in metrics(base_url) if 'finished_reason="abort"' in k), 0)


def main():
    args = parse_args()
    require_model()
    with serve(args.server_args, args.mpirun) as server:
        url = server.base_url
        idle = kv_usage(url)
        assert idle and all(v == 0 for v in idle.values()), f"not idle at start: {idle}"
        body = {"prompt": "Tell me a very long story.", "max_tokens": 1000, "ignore_eos": True,
                "temperature": 0}
        for streaming in (True, False):
            kind = "streaming" if streaming else "non-streaming"
            before = aborted(url)
            s = open_request(url, dict(body, stream=streaming))
            if streaming:  # read until a few tokens have come
                received = b""
                while received.count(b"data: ") < 4:
                    received += s.recv(4096)
            busy = wait_until(f"{kind}: pages in use on every rank",
                              lambda: (lambda u: u if all(v > 0 for v in u.values()) else None)(
                                  kv_usage(url)))
            tokens_at_close = metrics(url)['parafuse:generation_tokens_total{model_name="' +
                                          server.model + '"}']
            s.close()
            closed = time.monotonic()
            wait_until(f"{kind}: KV usage back to idle", lambda: kv_usage(url) == idle)
            freed_after = time.monotonic() - closed
            wait_until(f"{kind}: the request counted as aborted",
                       lambda: aborted(url) == before + 1)
            tokens_after = metrics(url)['parafuse:generation_tokens_total{model_name="' +
                                        server.model + '"}']
            print(f"{kind}: usage while running {busy}; after the client left, idle again in "
                  f"{freed_after:.2f} s, {tokens_after - tokens_at_close:.0f} more tokens made "
                  f"(of {body['max_tokens']})")
            assert tokens_after - tokens_at_close < 100, "the generation did not stop"


if __name__ == "__main__":
    sys.exit(main())
