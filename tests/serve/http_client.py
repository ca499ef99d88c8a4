"""A small stdlib HTTP client for the serve tests: JSON requests, SSE streams with the arrival
time of every event, and /metrics parsed into {name{labels}: value}. (The official openai
package is tested in test_openai_client.py; these tests need raw access and timings.)"""
import http.client
import json
import time
import urllib.parse


def connect(base_url, timeout=600):
    u = urllib.parse.urlparse(base_url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)


def request(base_url, method, path, body=None, headers=None):
    """Returns (status, parsed JSON or text)."""
    c = connect(base_url)
    data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
    c.request(method, path, data, headers or {"Content-Type": "application/json"})
    r = c.getresponse()
    text = r.read().decode("utf-8", "replace")
    c.close()
    try:
        return r.status, json.loads(text)
    except ValueError:
        return r.status, text


def post(base_url, path, body):
    return request(base_url, "POST", path, body)


def stream(base_url, path, body):
    """POSTs with "stream": true; returns (events, times): the parsed `data:` JSON events (up to
    [DONE]) and the monotonic time each arrived."""
    c = connect(base_url)
    c.request("POST", path, json.dumps(dict(body, stream=True)),
              {"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        raise AssertionError(f"stream answered {r.status}: {r.read()!r}")
    events, times, done = [], [], False
    while not done:
        line = r.readline()
        if not line:
            break
        line = line.decode().rstrip("\r\n")
        if not line.startswith("data: "):
            continue
        if line == "data: [DONE]":
            done = True
            break
        events.append(json.loads(line[6:]))
        times.append(time.monotonic())
    c.close()
    if not done:
        raise AssertionError("the stream ended without data: [DONE]")
    return events, times


def completion_text(events):
    return "".join(e["choices"][0]["text"] for e in events if e["choices"])


def metrics(base_url):
    status, text = request(base_url, "GET", "/metrics")
    assert status == 200, text
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def kv_usage(base_url):
    """{rank: fraction of KV pages in use} from /metrics."""
    usage = {}
    for name, value in metrics(base_url).items():
        if name.startswith("parafuse:kv_cache_usage_perc{"):
            usage[int(name.split('rank="')[1].split('"')[0])] = value
    return usage
