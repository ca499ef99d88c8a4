"""Every class of bad input gets its 4xx answer with the OpenAI error shape
{"error": {"message", "type", "param", "code"}}, and /health stays 200 after each one. The
table sends JSON requests and raw bytes (a truncated request line, a 1 MB header, 10,000 nested
brackets, garbage); then 429 past the queue limit, and 503 while the model loads.
"""
import json
import os
import socket
import sys
import tempfile
import threading
import time
import urllib.parse

from http_client import request
from serve_fixture import BINARY, MODEL, Process, parse_args, require_model, serve

KEY = "test-key-123"
AUTH = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}


def raw_exchange(base_url, data, half_close=False, timeout=30):
    """Sends bytes on a fresh connection; returns the whole answer (up to the server's close)."""
    u = urllib.parse.urlparse(base_url)
    with socket.create_connection((u.hostname, u.port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking it all (the 1 MB header)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        answer = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            answer += chunk
            if b"\r\n\r\n" in answer:
                head, _, body = answer.partition(b"\r\n\r\n")
                length = [int(l.split(b":")[1]) for l in head.split(b"\r\n")
                          if l.lower().startswith(b"content-length:")]
                if length and len(body) >= length[0]:
                    break
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/1.1 ") else None
    return status, body


def check_error(name, status, body, want_status, want_param=None, want_text=None):
    assert status == want_status, f"{name}: status {status}, wanted {want_status}: {body!r}"
    error = (json.loads(body) if isinstance(body, (bytes, str)) else body)["error"]
    assert set(error) == {"message", "type", "param", "code"}, f"{name}: {error}"
    assert error["message"], f"{name}: empty message"
    if want_param is not None:
        assert error["param"] == want_param, f"{name}: param {error['param']!r}: {error}"
    if want_text is not None:
        assert want_text in error["message"], f"{name}: {error['message']!r}"
    return error


def health(base_url):
    status, body = request(base_url, "GET", "/health")
    assert status == 200, f"/health answered {status}: {body}"


def main():
    parse_args()
    require_model()

    # 503 while the model loads: the port answers from the "listening" line on.
    loading = Process([BINARY, "serve", "-m", MODEL, "--port", "0"],
                      r"listening on (http://\S+)", "parafuse serve (loading)",
                      dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    try:
        url = loading.wait_ready(120).group(1)
        ready_status, ready_body = request(url, "GET", "/ready")
        gen_status, gen_body = request(url, "POST", "/v1/completions", {"prompt": "x"})
        health(url)
        if ready_status == 503:
            check_error("ready while loading", ready_status, ready_body, 503, None, "loading")
            print("while loading: /ready 503, /health 200, completions", gen_status)
        else:  # the load won the race: nothing to check, and say so
            print(f"note: the model loaded before the first /ready ({ready_status})")
        if gen_status != 200:
            check_error("completion while loading", gen_status, gen_body, 503)
    finally:
        loading.stop()

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as config:
        config.write("serve:\n  max_waiting_requests: 2\n  max_running_requests: 1\n")
    try:
        with serve(["--api-key", KEY, "--config", config.name]) as server:
            run_table(server)
    finally:
        os.unlink(config.name)


def run_table(server):
    url, model = server.base_url, server.model
    json_cases = [
        # name, method, path, body, headers, status, param, text
        ("malformed JSON", "POST", "/v1/completions", '{"prompt": "x",', AUTH, 400, None,
         "not valid JSON"),
        ("not an object", "POST", "/v1/completions", "[1]", AUTH, 400, None, "JSON object"),
        ("wrong type", "POST", "/v1/completions", {"prompt": 5}, AUTH, 400, "prompt", None),
        ("max_tokens string", "POST", "/v1/completions", {"prompt": "x", "max_tokens": "8"}, AUTH,
         400, "max_tokens", "must be an integer"),
        ("negative max_tokens", "POST", "/v1/completions", {"prompt": "x", "max_tokens": -1},
         AUTH, 400, "max_tokens", None),
        ("huge max_tokens", "POST", "/v1/completions", {"prompt": "x", "max_tokens": 10**12},
         AUTH, 400, "max_tokens", None),
        ("n = 2", "POST", "/v1/completions", {"prompt": "x", "n": 2}, AUTH, 400, "n", None),
        ("top_k below -1", "POST", "/v1/completions", {"prompt": "x", "top_k": -7}, AUTH, 400,
         "top_k", None),
        ("NaN temperature", "POST", "/v1/completions", '{"prompt": "x", "temperature": NaN}',
         AUTH, 400, None, "not valid JSON"),
        ("negative temperature", "POST", "/v1/completions", {"prompt": "x", "temperature": -0.5},
         AUTH, 400, "temperature", None),
        ("top_p zero", "POST", "/v1/completions", {"prompt": "x", "top_p": 0}, AUTH, 400,
         "top_p", None),
        ("top_p above 1", "POST", "/v1/chat/completions",
         {"messages": [{"role": "user", "content": "x"}], "top_p": 1.01}, AUTH, 400, "top_p",
         None),
        ("empty prompt", "POST", "/v1/completions", {"prompt": ""}, AUTH, 400, "prompt", None),
        ("empty messages", "POST", "/v1/chat/completions", {"messages": []}, AUTH, 400,
         "messages", None),
        ("token id outside vocab", "POST", "/v1/completions", {"prompt": [1, 10**6]}, AUTH, 400,
         "prompt[1]", None),
        ("beyond the context", "POST", "/v1/completions", {"prompt": "x", "max_tokens": 9000},
         AUTH, 400, "max_tokens", "context is 8192"),
        ("beyond the KV cache", "POST", "/v1/completions", {"prompt": "x", "max_tokens": 5000},
         AUTH, 400, "max_tokens", "KV cache"),
        ("no key", "POST", "/v1/completions", {"prompt": "x"},
         {"Content-Type": "application/json"}, 401, None, "missing API key"),
        ("wrong key", "GET", "/v1/models", None, {"Authorization": "Bearer nope"}, 401, None,
         "incorrect API key"),
        ("unknown model", "POST", "/v1/completions", {"model": "gpt-9", "prompt": "x"}, AUTH,
         404, "model", "does not exist"),
        ("unknown path", "GET", "/v2/everything", None, AUTH, 404, None, "no route"),
        ("wrong method", "GET", "/v1/completions", None, AUTH, 405, None, "takes POST"),
        ("wrong method on health", "POST", "/health", "{}", AUTH, 405, None, "takes GET"),
        ("body over 4 MiB", "POST", "/v1/completions", "x" * (5 << 20), AUTH, 413, None,
         "larger than"),
    ]
    for name, method, path, body, headers, status, param, text in json_cases:
        got_status, got_body = request(url, method, path, body, headers)
        check_error(name, got_status, got_body, status, param, text)
        health(url)
        print(f"ok {status} {name}")

    deep = b"[" * 10000 + b"]" * 10000
    raw_cases = [
        ("truncated request line", b"GET /heal", True, 400),
        ("1 MB header", b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) +
         b"\r\n\r\n", False, 431),
        ("10,000 nested brackets", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
         b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Length: " +
         str(len(deep)).encode() + b"\r\n\r\n" + deep, False, 400),
        ("garbage", b"\x00\x01\x02 HELLO\r\n\r\n", True, 400),
        ("bad content length", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
         b"Content-Length: abc\r\n\r\n", True, 400),
    ]
    for name, data, half_close, status in raw_cases:
        got_status, got_body = raw_exchange(url, data, half_close)
        check_error(name, got_status, got_body, status)
        health(url)
        print(f"ok {status} {name}")

    # 429: one running, two waiting; the rest of a burst is refused. Each request is long, so
    # the burst overlaps; the clients then leave (their requests are cancelled).
    statuses, lock = [], threading.Lock()

    def client():
        status, body = request(url, "POST", "/v1/completions",
                               {"model": model, "prompt": "Count:", "max_tokens": 24,
                                "ignore_eos": True, "temperature": 0}, AUTH)
        with lock:
            statuses.append((status, body))

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join()
    refused = [body for status, body in statuses if status == 429]
    served = [status for status, _ in statuses if status == 200]
    assert refused and served, f"wanted some 429 and some 200: {[s for s, _ in statuses]}"
    check_error("queue full", 429, refused[0], 429, None, "too many requests")
    health(url)
    print(f"ok 429 queue full ({len(refused)} of 8 refused, {len(served)} served)")


if __name__ == "__main__":
    sys.exit(main())
