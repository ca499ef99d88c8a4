"""scancel of a serving job: cluster/sbatch/serve.sbatch (srun --mpi=pmix, SmolLM2 on pp 2) under
the local Slurm serves 8 streams; `scancel JOBID` (SIGTERM to every task and to srun) then

  - the server stops taking requests: /ready 503, a new request 503 "shutting_down";
  - each of the 8 streams either finishes (finish_reason stop/length, then [DONE]) or ends with
    a clean error event ({"error": {"code": "shutting_down", ...}}, then [DONE]): none is cut;
  - the requests still running when serve.drain_seconds (here DRAIN) is up are the cancelled
    ones, so with long requests both kinds are seen;
  - every rank exits 0: the step's exit code (launch.sh prints it) and the job's ExitCode 0:0.

  test_serve_scancel.py --launcher mpirun   the same without Slurm: `mpirun -np 2` and
      `kill -USR1 <mpirun>` (Open MPI ends the job itself on SIGTERM, but forwards SIGUSR1 to
      every rank, which parafuse serve takes as the stop); mpirun exits 0.
"""
import argparse
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time

import cluster_fixture as cf
from http_client import request

DRAIN = 4
STREAMS = 8


def read_stream(url, body, result):
    """Reads one SSE stream to its end; stores ('done'|'error'|'cut', events, detail)."""
    import http.client
    import urllib.parse
    u = urllib.parse.urlparse(url)
    try:
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
        c.request("POST", "/v1/completions", json.dumps(dict(body, stream=True)),
                  {"Content-Type": "application/json"})
        r = c.getresponse()
        if r.status != 200:
            result.update(kind=f"status {r.status}", events=[], detail=r.read())
            return
        events, done = [], False
        while True:
            line = r.readline()
            if not line:
                break
            line = line.decode().rstrip("\r\n")
            if line == "data: [DONE]":
                done = True
                break
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
        errors = [e for e in events if "error" in e]
        finishes = [e["choices"][0]["finish_reason"] for e in events
                    if e.get("choices") and e["choices"][0].get("finish_reason")]
        if not done:
            kind = "cut"
        elif errors:
            kind = "error"
        else:
            kind = "done"
        result.update(kind=kind, events=events, errors=errors, finishes=finishes)
    except Exception as e:  # noqa: BLE001  (a broken stream is a result to report)
        result.update(kind=f"exception {e!r}", events=[])


def write_config(folder):
    config = os.path.join(folder, "serve.yaml")
    with open(config, "w") as f:
        f.write(f"model: {cf.MODEL}\nparallel:\n  pp: 2\nthreads: 1\n"
                f"batch:\n  kv_cache_tokens: 8192\n"
                f"serve:\n  port: 0\n  drain_seconds: {DRAIN}\n")
    return config


def start_streams(url):
    """8 streams, half short (they finish within the drain), half long (they cannot); returns
    once all 8 run."""
    results = [dict() for _ in range(STREAMS)]
    threads = []
    for i in range(STREAMS):
        body = {"prompt": f"Story {i}:", "max_tokens": 8 if i % 2 == 0 else 2000,
                "temperature": 0, "ignore_eos": True}
        threads.append(threading.Thread(target=read_stream, args=(url, body, results[i])))
        threads[-1].start()
    running = 'parafuse:num_requests_running{model_name="'
    while True:
        metrics = request(url, "GET", "/metrics")[1]
        m = re.search(re.escape(running) + r'[^"]*"} (\d+)', metrics)
        if m and int(m.group(1)) >= STREAMS:
            return results, threads
        time.sleep(0.05)


def check_stopping(url, what):
    deadline = time.monotonic() + 10
    while request(url, "GET", "/ready")[0] != 503:
        assert time.monotonic() < deadline, f"/ready still 200 10 s after {what}"
        time.sleep(0.02)
    status, body = request(url, "POST", "/v1/completions", {"prompt": "late", "max_tokens": 2})
    assert status == 503 and body["error"]["code"] == "shutting_down", (status, body)


def check_streams(results, log):
    kinds = [r.get("kind") for r in results]
    for i, r in enumerate(results):
        assert r.get("kind") in ("done", "error"), f"stream {i}: {r}\n{log}"
        if r["kind"] == "error":
            assert r["errors"][0]["error"]["code"] == "shutting_down", r["errors"]
            assert r["finishes"] == ["abort"], r["finishes"]
        else:
            assert r["finishes"] == ["length"], r["finishes"]
    assert kinds.count("done") >= STREAMS // 2, f"the short streams must finish: {kinds}"
    assert "error" in kinds, f"the long streams must be cancelled after the drain: {kinds}"
    return kinds


def under_mpirun(folder):
    t0 = time.monotonic()
    job = cf.Job([*cf.MPIRUN, "-np", "2", cf.BINARY, "serve", "--config", write_config(folder)],
                 name="mpirun")
    try:
        url = job.wait_for(r"serving \S+ on (http://\S+)", 120).group(1)
        results, threads = start_streams(url)
        signalled = time.monotonic()
        os.kill(job.proc.pid, signal.SIGUSR1)
        check_stopping(url, "SIGUSR1")
        for t in threads:
            t.join(120)
        streams_ended = time.monotonic() - signalled
        code = job.wait(60)
        ended = time.monotonic() - signalled
        kinds = check_streams(results, job.log())
        cf.log(f"after kill -USR1 <mpirun>: streams {kinds} (ended {streams_ended:.1f} s after "
               f"the signal); mpirun exit {code}, {ended:.1f} s after the signal")
        assert code == 0, f"mpirun exit code {code}:\n{job.log()}"
    finally:
        job.close()
    cf.log(f"passed in {time.monotonic() - t0:.1f} s")
    return 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--launcher", choices=["srun", "mpirun"], default="srun")
    args = parser.parse_args()
    cf.require_model()
    if args.launcher == "mpirun":
        with tempfile.TemporaryDirectory(prefix="pf-serve-") as d:
            return under_mpirun(d)
    cf.require_root("the local Slurm")
    t0 = time.monotonic()
    with cf.local_slurm(port=6927) as slurm, tempfile.TemporaryDirectory(prefix="pf-serve-") as d:
        config = write_config(d)
        out = os.path.join(d, "job.out")
        _, text = slurm.command(cf.SUBMIT, "--gpus-per-node", "0", "--sbatch",
                                f"--parsable --overcommit --output={out}", "serve", config)
        job_id = text.strip().splitlines()[-1].split(";")[0]
        cf.log(f"serving job {job_id}")
        try:
            deadline = time.monotonic() + 120
            url = None
            while url is None:
                assert time.monotonic() < deadline, f"no serving line:\n{open(out).read()}"
                time.sleep(0.2)
                if os.path.exists(out):
                    m = re.search(r"serving \S+ on (http://\S+)", open(out).read())
                    url = m and m.group(1)
            cf.log(f"serving at {url} after {time.monotonic() - t0:.1f} s")
            results, threads = start_streams(url)
            scancel_at = time.monotonic()
            slurm.command("scancel", job_id)
            check_stopping(url, "scancel")
            for t in threads:
                t.join(120)
            streams_ended = time.monotonic() - scancel_at
            state, exit_code = slurm.wait_job(job_id, timeout=120)
            ended = time.monotonic() - scancel_at
            log = open(out).read()
        finally:
            slurm.command("scancel", "--signal=KILL", job_id, check=False)
        kinds = check_streams(results, log)
        cf.log(f"after scancel: streams {kinds} (ended {streams_ended:.1f} s after scancel); job "
               f"{state}, ExitCode {exit_code}, gone {ended:.1f} s after scancel")
        rc = re.search(r"launch.sh: parafuse serve exited with (\d+)", log)
        assert rc and rc.group(1) == "0", f"the step's exit code:\n{log}"
        assert exit_code == "0:0", f"job ExitCode {exit_code} ({state}):\n{log}"
        assert streams_ended < DRAIN + 10, f"streams took {streams_ended:.1f} s"
    cf.log(f"passed in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
