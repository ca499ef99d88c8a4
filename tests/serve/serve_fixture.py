"""Starts a real `parafuse serve` for a test and always stops it.

The server listens on --port 0 (a free port) and announces itself with one line on stderr,
"parafuse: serving NAME on http://HOST:PORT"; `serve()` waits for that line and yields the
base URL and the model name. It runs in its own process group (alone or under mpirun with all
its ranks), so stopping it reaches every process: SIGINT, a wait for the drain, then SIGKILL.
The server's output is kept and printed when something fails, so the test log says why.

Used by the test_*.py scripts beside it (registered in CMakeLists.txt here). Environment:
  PF_BINARY  the parafuse executable (default: build/parafuse)
  PF_MODEL   the model to serve (default: the embedded SmolLM2 in .cache/models)
"""
import argparse
import contextlib
import dataclasses
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import unittest
import urllib.error
import urllib.request

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BINARY = os.environ.get("PF_BINARY", os.path.join(REPO, "build", "parafuse"))
MODEL = os.environ.get(
    "PF_MODEL", os.path.join(REPO, ".cache", "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
SKIP = 77  # ctest's SKIP_RETURN_CODE for these tests


def skip(reason):
    print(f"skipped: {reason}", flush=True)
    sys.exit(SKIP)


def require_model():
    if not os.path.isfile(MODEL):
        skip(f"no model at {MODEL} (cluster/setup.sh fetches it)")


def parse_args(add_arguments=None):
    """The scripts' shared command line: --mpirun "mpirun -np 3 ..." and --server-args "--tp 3"
    (both split like a shell would), plus what `add_arguments(parser)` adds."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--mpirun", default="", help="launcher command line, e.g. 'mpirun -np 3'")
    parser.add_argument("--server-args", default="", help="more `parafuse serve` flags")
    if add_arguments:
        add_arguments(parser)
    args = parser.parse_args()
    args.mpirun, args.server_args = shlex.split(args.mpirun), shlex.split(args.server_args)
    return args


# If this test process dies without cleaning up (a ctest timeout kills it), the kernel sends the
# child SIGTERM, which the server and mpirun both take as "shut down" (util-linux's setpriv sets
# PR_SET_PDEATHSIG and execs the command in the same process).
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "TERM"] if shutil.which("setpriv") else []


class Process:
    """A command in its own process group whose merged stdout+stderr is read by a thread until
    a line matches `ready_pattern`. Ends the whole group on stop()."""

    def __init__(self, command, ready_pattern, name, env=None):
        self.name = name
        self.command = command
        self.lines = []
        self.match = None
        self._ready = threading.Event()
        self._pattern = re.compile(ready_pattern)
        self.proc = subprocess.Popen(
            DIE_WITH_PARENT + command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            if self.match is None:
                self.match = self._pattern.search(line)
                if self.match:
                    self._ready.set()
        self._ready.set()  # end of output: the process has exited

    def wait_ready(self, timeout):
        """Returns the match of the ready line; raises with the output when it never came."""
        if not self._ready.wait(timeout):
            raise RuntimeError(f"{self.name}: no line matching /{self._pattern.pattern}/ "
                               f"after {timeout} s")
        if self.match is None:
            self.proc.wait()
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before it "
                               f"was ready")
        return self.match

    def log(self):
        return "\n".join(self.lines)

    def stop(self, first_signal=signal.SIGINT, grace=30):
        """Signals the whole group, waits up to `grace` s, then kills what is left.
        Returns the leader's exit code (negative: killed by that signal)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, first_signal)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            print(f"{self.name}: still running {grace} s after {first_signal.name}; killing it",
                  file=sys.stderr)
        # The leader may be gone while ranks or helper processes of its group linger.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._reader.join(timeout=5)
        self.proc.stdout.close()
        return self.proc.returncode

    def print_log(self, title=None):
        print(f"----- {title or self.name} output ({' '.join(self.command)}) -----\n"
              f"{self.log()}\n----- end of {self.name} output -----", file=sys.stderr, flush=True)


@dataclasses.dataclass
class Server:
    base_url: str      # http://HOST:PORT
    model: str         # the served model name
    process: Process


def check_ready(base_url):
    """The contract: the "serving" line comes once the server can serve, so /ready is 200."""
    try:
        with urllib.request.urlopen(base_url + "/ready", timeout=30) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    if status != 200:
        raise AssertionError(f"GET /ready right after the serving line: {status} {body!r}")


@contextlib.contextmanager
def serve(server_args=(), mpirun=(), model=None, timeout=120, expect_clean_exit=None):
    """Yields a Server running `[mpirun...] parafuse serve -m MODEL --port 0 server_args...`.

    On exit stops it with SIGINT; a server that does not exit 0 (the contract: SIGINT drains
    and exits 0) fails the test, by default only for a single process (mpirun's own exit code
    after a signal is its business). On any failure the server's output is printed."""
    if expect_clean_exit is None:
        expect_clean_exit = not mpirun
    command = [*mpirun, BINARY, "serve", "-m", model or MODEL, "--port", "0", *server_args]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    process = Process(command, r"serving (\S+) on (http://\S+)", "parafuse serve", env)
    failed = True
    try:
        started = time.monotonic()
        match = process.wait_ready(timeout)
        print(f"server ready after {time.monotonic() - started:.1f} s: {match.group(0)}",
              flush=True)
        server = Server(base_url=match.group(2).rstrip("/"), model=match.group(1),
                        process=process)
        check_ready(server.base_url)
        yield server
        failed = False
    finally:
        code = process.stop()
        if failed:
            process.print_log()
        elif expect_clean_exit and code != 0:
            process.print_log()
            raise AssertionError(f"parafuse serve exited with {code} after SIGINT, not 0")


def run_test_cases(set_server, server_args=(), mpirun=()):
    """Runs the calling script's unittest cases against one server, which `set_server(server)`
    hands to them; prints the server's output when a case fails. Returns the exit code."""
    with serve(server_args, mpirun=mpirun) as server:
        set_server(server)
        result = unittest.main(argv=sys.argv[:1], exit=False, verbosity=2).result
        if not result.wasSuccessful():
            server.process.print_log()
    return 0 if result.wasSuccessful() else 1
