"""What the cluster tests share: the local Slurm, two hosts in network namespaces, jobs in
their own process groups, and the kill-and-measure steps of the fault tests.

Every resource is a context manager that cleans up on the way out, also when the test fails or
is interrupted: Slurm is stopped (cluster/local-slurm.sh stop), the namespaces and their /etc
files are deleted, and every process a test started is killed by its process group. A missing
prerequisite (not root, no sinfo, no model) ends the test with exit code 77 and the reason:
ctest shows it as skipped.

Environment (set by tests/cluster/CMakeLists.txt):
  PF_BINARY   the parafuse executable        PF_MODEL   the embedded SmolLM2 GGUF
  PF_MPIRUN   mpirun and its flags (one string)
"""
import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "serve"))  # serve_fixture, http_client

from serve_fixture import DIE_WITH_PARENT, SKIP, skip  # noqa: E402  (shared with tests/serve)

BINARY = os.environ.get("PF_BINARY", os.path.join(REPO, "build", "parafuse"))
MODEL = os.environ.get(
    "PF_MODEL", os.path.join(REPO, ".cache", "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
MPIRUN = shlex.split(os.environ.get(
    "PF_MPIRUN", "mpirun --oversubscribe --allow-run-as-root --bind-to none"))
# tp 2 x pp 2 needs even head counts (SmolLM2 has 9 query, 3 KV heads): a 140M Llama shape with
# seeded random weights, the same on every rank and every run.
SYNTHETIC = "synthetic:" + os.path.join(REPO, "configs", "models", "bench-llama-140m.json") + "@1"
LOCAL_SLURM = os.path.join(REPO, "cluster", "local-slurm.sh")
SUBMIT = os.path.join(REPO, "cluster", "sbatch", "submit.sh")
# The prompt every correctness check uses: ids, so no tokenizer question enters the comparison.
PROMPT_IDS = "1,504,3458,282,4237,314,253,1978,28,446"
RANK_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}

__all__ = ["SKIP", "skip"]


def _terminate(signum, frame):
    # SIGTERM (timeout(1), a parent that dies: serve_fixture's DIE_WITH_PARENT) unwinds the
    # test like an exception, so every `finally` below runs: Slurm stops, namespaces go.
    raise SystemExit(f"terminated by signal {signum}")


signal.signal(signal.SIGTERM, _terminate)


def log(message):
    print(message, flush=True)


def require_root(what):
    if os.geteuid() != 0:
        skip(f"{what} needs root (uid {os.geteuid()})")


def require_model():
    if not os.path.isfile(MODEL):
        skip(f"no model at {MODEL} (cluster/setup.sh fetches it)")


def require_tools(*names):
    for name in names:
        if not shutil.which(name) and not os.path.exists(f"/usr/sbin/{name}"):
            skip(f"'{name}' is not installed (cluster/setup.sh installs it)")


def env_with(**extra):
    env = dict(os.environ, **RANK_ENV)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def parse_ids(output):
    """The generated ids: the last line of `parafuse generate --print-ids` that is only ids."""
    lines = [l.strip() for l in output.splitlines() if re.fullmatch(r"\d+( \d+)*", l.strip())]
    if not lines:
        raise AssertionError(f"no id line in the output:\n{output}")
    return [int(t) for t in lines[-1].split()]


def run(command, timeout=120, env=None, check=True, cwd=REPO):
    """Runs a command in its own process group; kills the group on timeout. Returns
    (exit code, merged output)."""
    proc = subprocess.Popen(DIE_WITH_PARENT + list(command), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env or env_with(), cwd=cwd, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        out, _ = proc.communicate()
        raise AssertionError(f"{shlex.join(command)} still running after {timeout} s:\n"
                             f"{out.decode(errors='replace')}")
    text = out.decode(errors="replace")
    if check and proc.returncode != 0:
        raise AssertionError(f"{shlex.join(command)} exited {proc.returncode}:\n{text}")
    return proc.returncode, text


def kill_group(pid):
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class Job:
    """A command in its own process group with its output read line by line by a thread;
    `wait_for(pattern)` waits for a line. The group is killed on close()."""

    def __init__(self, command, env=None, name="job", cwd=REPO):
        self.name, self.command = name, list(command)
        self.lines, self._cond = [], threading.Condition()
        self.proc = subprocess.Popen(DIE_WITH_PARENT + self.command, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env or env_with(), cwd=cwd, start_new_session=True)
        self.started = time.monotonic()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.lines.append(None)  # end of output
            self._cond.notify_all()

    def wait_for(self, pattern, timeout):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    if line is None:
                        raise AssertionError(f"{self.name} ended before a line matching "
                                             f"/{pattern}/:\n{self.log()}")
                    m = rx.search(line)
                    if m:
                        return m
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.name}: no line matching /{pattern}/ after "
                                         f"{timeout} s:\n{self.log()}")
                self._cond.wait(left)

    def wait(self, timeout):
        """The exit code, or None when still running after `timeout` s."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def log(self):
        return "\n".join(l for l in self.lines if l is not None)

    def close(self):
        kill_group(self.proc.pid)
        self.proc.wait()
        self._reader.join(timeout=5)


@contextlib.contextmanager
def job(command, env=None, name="job"):
    j = Job(command, env=env, name=name)
    try:
        yield j
    finally:
        j.close()


# ---- processes of the job ---------------------------------------------------------------------

def rank_pids(marker):
    """{world rank: pid} of running parafuse ranks whose environment holds PF_TEST_MARKER=marker
    (the test sets it; mpirun and srun pass it on), from /proc."""
    ranks = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
            with open(f"/proc/{entry}/comm", "rb") as f:
                comm = f.read().strip()
        except (OSError, ValueError):
            continue
        if comm != b"parafuse" or env.get(b"PF_TEST_MARKER") != marker.encode():
            continue
        for key in (b"OMPI_COMM_WORLD_RANK", b"PMIX_RANK", b"SLURM_PROCID"):
            if key in env:
                ranks[int(env[key])] = int(entry)
                break
    return ranks


def wait_ranks(marker, count, timeout):
    deadline = time.monotonic() + timeout
    while True:
        pids = rank_pids(marker)
        if len(pids) >= count:
            return pids
        if time.monotonic() > deadline:
            raise AssertionError(f"only {len(pids)} of {count} ranks running after {timeout} s")
        time.sleep(0.05)


def seconds_until_gone(pids, timeout):
    """Seconds until none of `pids` exists (zombies count as gone), or None after `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return time.monotonic() - start
        time.sleep(0.05)
    return None


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


# ---- the local Slurm ----------------------------------------------------------------------------

class LocalSlurm:
    def __init__(self, folder, port):
        self.folder, self.port = folder, port
        self.env = env_with(PF_SLURM_DIR=folder, PF_SLURM_PORT=port, PF_BIN=BINARY,
                            SLURM_CONF=os.path.join(folder, "etc", "slurm.conf"))

    def command(self, *args, timeout=60, check=True):
        return run(list(args), timeout=timeout, env=self.env, check=check)

    def wait_job(self, job_id, timeout):
        """Waits until the job left the queue; returns (state, exit code "N:S")."""
        deadline = time.monotonic() + timeout
        while True:
            _, out = self.command("scontrol", "-o", "show", "job", job_id, check=False)
            state = re.search(r"JobState=(\S+)", out)
            code = re.search(r"ExitCode=(\S+)", out)
            if state and state.group(1) not in ("PENDING", "RUNNING", "CONFIGURING",
                                                 "COMPLETING"):
                return state.group(1), code.group(1) if code else "?"
            if time.monotonic() > deadline:
                self.command("scancel", job_id, check=False)
                raise AssertionError(f"job {job_id} still {state and state.group(1)} after "
                                     f"{timeout} s")
            time.sleep(0.2)


@contextlib.contextmanager
def local_slurm(port=6917):
    """A single-node Slurm (cluster/local-slurm.sh) under a fresh folder; stopped on exit."""
    require_root("the local Slurm")
    require_tools("munged", "slurmctld", "slurmd", "sinfo", "srun", "sbatch")
    folder = tempfile.mkdtemp(prefix="pf-slurm-")
    slurm = LocalSlurm(folder, port)
    try:
        started = time.monotonic()
        run([LOCAL_SLURM, "start"], timeout=90, env=slurm.env)
        log(f"local Slurm up after {time.monotonic() - started:.1f} s under {folder}")
        yield slurm
    finally:
        code, out = run([LOCAL_SLURM, "stop"], timeout=60, env=slurm.env, check=False)
        log(out.strip())
        for daemon in ("munged", "slurmctld", "slurmd"):
            pid_file = os.path.join(folder, "run", f"{daemon}.pid")
            with contextlib.suppress(OSError, ValueError):
                pid = int(open(pid_file).read())
                if _alive(pid):
                    raise AssertionError(f"{daemon} ({pid}) still running after stop")
        shutil.rmtree(folder, ignore_errors=True)


# ---- two hosts in network namespaces ------------------------------------------------------------

AGENT = os.path.join(HERE, "netns_agent.sh")


class TwoHosts:
    """Two 'hosts' on this machine: network namespaces <prefix>-hosta and <prefix>-hostb whose
    interfaces pf0 (10.77.0.1 and 10.77.0.2) form one link, each with its own hostname (a UTS
    namespace per command) and /etc/hosts. mpirun runs on hosta; its launch agent
    (netns_agent.sh) starts the daemon of hostb inside hostb's namespace, so ranks on different
    hosts can only talk over that link (TCP): Open MPI's tcp BTL and UCX's tcp transport.

    Unshaped, the link is a veth pair. Shaped (delay_ms, rate), each pf0 is a veth to a third
    namespace <prefix>-wire, where netns_wire.py forwards frames between the two after delay_ms
    (each way), and tc tbf limits each host's sending rate. (netem would do both, but this
    kernel has no netem qdisc: CONFIG_NET_SCH_NETEM is not set.)"""

    HOSTS = {"hosta": "10.77.0.1", "hostb": "10.77.0.2"}

    def __init__(self, tag, delay_ms=None, rate=None):
        self.prefix = f"pf-{tag}"
        self.ns = {h: f"{self.prefix}-{h}" for h in self.HOSTS}
        self.wire_ns = f"{self.prefix}-wire"
        self.delay_ms, self.rate = delay_ms, rate
        self.folder = tempfile.mkdtemp(prefix="pf-hosts-")
        self.hostfile = os.path.join(self.folder, "hostfile")
        self.wire = None

    def sh(self, *args, check=True):
        code, out = run(list(args), timeout=30, check=check)
        return out

    def up(self):
        for host, ns in self.ns.items():
            self.sh("ip", "netns", "add", ns)
            os.makedirs(f"/etc/netns/{ns}", exist_ok=True)
            with open(f"/etc/netns/{ns}/hosts", "w") as f:
                f.write("127.0.0.1 localhost\n" +
                        "".join(f"{ip} {h}\n" for h, ip in self.HOSTS.items()))
        short = self.prefix[-8:]
        if self.delay_ms is None:
            pairs = [(f"{short}-a", self.ns["hosta"], f"{short}-b", self.ns["hostb"])]
        else:
            self.sh("ip", "netns", "add", self.wire_ns)
            pairs = [(f"{short}-a", self.ns["hosta"], f"{short}-wa", self.wire_ns),
                     (f"{short}-b", self.ns["hostb"], f"{short}-wb", self.wire_ns)]
        for dev1, ns1, dev2, ns2 in pairs:
            self.sh("ip", "link", "add", dev1, "type", "veth", "peer", "name", dev2)
            for dev, ns in ((dev1, ns1), (dev2, ns2)):
                self.sh("ip", "link", "set", dev, "netns", ns)
        for host, ns in self.ns.items():
            dev = f"{short}-{host[-1]}"
            self.sh("ip", "-n", ns, "link", "set", dev, "name", "pf0")
            self.sh("ip", "-n", ns, "addr", "add", f"{self.HOSTS[host]}/24", "dev", "pf0")
            self.sh("ip", "-n", ns, "link", "set", "pf0", "up")
            self.sh("ip", "-n", ns, "link", "set", "lo", "up")
        if self.delay_ms is not None:
            for host, ns in self.ns.items():
                # The wire forwards finished frames: checksums computed in software (veth
                # leaves them to "hardware" otherwise: TCP would see every segment as corrupt)
                # and no segmentation offload (every frame within the MTU).
                self.sh("ip", "netns", "exec", ns, "ethtool", "-K", "pf0", "tx", "off", "tso",
                        "off", "gso", "off")
                self.sh("ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", "pf0",
                        "root", "tbf", "rate", self.rate, "burst", "125kb", "latency", "100ms")
            for end in ("wa", "wb"):
                self.sh("ip", "-n", self.wire_ns, "link", "set", f"{short}-{end}", "promisc",
                        "on", "up")
            self.wire = Job(["ip", "netns", "exec", self.wire_ns, sys.executable,
                             os.path.join(HERE, "netns_wire.py"), f"{short}-wa", f"{short}-wb",
                             "--delay-ms", str(self.delay_ms)], name="wire")
            self.wire.wait_for(r"^wire: ", timeout=30)
        with open(self.hostfile, "w") as f:
            f.write("hosta slots=2\nhostb slots=2\n")
        code, out = run(["ip", "netns", "exec", self.ns["hosta"], "ping", "-c", "3", "-i", "0.2",
                         self.HOSTS["hostb"]], timeout=30, check=False)
        rtt = re.search(r"= [\d.]+/([\d.]+)/", out)
        self.ping_ms = float(rtt.group(1)) if rtt else None
        if self.delay_ms is not None:
            assert self.ping_ms and self.ping_ms >= 2 * self.delay_ms, \
                f"the shaped link answers ping in {self.ping_ms} ms, under 2 x {self.delay_ms} ms"
        log(f"two hosts up ({'veth' if self.delay_ms is None else f'wire, delay {self.delay_ms} ms each way, tbf rate {self.rate}'}): "
            f"ping hosta -> hostb {self.ping_ms} ms average")

    def env(self, **extra):
        """The environment to run `mpirun()`'s command with (the agent reads the prefix)."""
        return env_with(PF_NETNS_PREFIX=self.prefix, **extra)

    def down(self):
        if self.wire:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.wire.proc.pid, signal.SIGTERM)
            self.wire.wait(5)
            self.wire.close()
            log("\n".join(l for l in self.wire.lines if l and l.startswith("wire ")))
            self.wire = None
        for ns in (*self.ns.values(), self.wire_ns):
            run(["ip", "netns", "del", ns], timeout=30, check=False)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)
        shutil.rmtree(self.folder, ignore_errors=True)

    def link_bytes(self):
        """Bytes sent over hosta's end of the link so far."""
        out = self.sh("ip", "-n", self.ns["hosta"], "-s", "-j", "link", "show", "pf0")
        import json
        return json.loads(out)[0]["stats64"]["tx"]["bytes"]

    def mpirun(self, np, args, map_by="slot", extra_env=None):
        """`mpirun` on hosta over both hosts: ranks placed by `map_by` (slot: 0,1 on hosta and
        2,3 on hostb; node: alternating), Open MPI's TCP limited to the link, UCX to tcp on it.
        The command runs as hosta (its netns, hostname and /etc/hosts)."""
        env = dict(RANK_ENV, UCX_TLS="tcp,self", UCX_NET_DEVICES="pf0",
                   **(extra_env or {}))
        command = [
            *MPIRUN, "-np", str(np), "--hostfile", self.hostfile, "--map-by", map_by,
            "--mca", "plm_rsh_agent", AGENT, "--mca", "btl", "self,vader,tcp",
            "--mca", "btl_tcp_if_include", "pf0", "--mca", "oob_tcp_if_include", "pf0",
            "--mca", "plm_rsh_no_tree_spawn", "1",
        ]
        for k, v in env.items():
            command += ["-x", f"{k}={v}"]
        # Ours win over the shared PF_MPIRUN flags (btl_tcp_if_include lo would contradict ours,
        # and Open MPI refuses a parameter given twice).
        command = _last_mca_wins(command)
        return [AGENT, "hosta", shlex.join(command + list(args))]


def _last_mca_wins(command):
    """Removes every `--mca NAME VALUE` that a later one with the same NAME overrides."""
    seen, keep = set(), [True] * len(command)
    for i in range(len(command) - 3, -1, -1):
        if command[i] == "--mca" and keep[i]:
            if command[i + 1] in seen:
                keep[i:i + 3] = [False] * 3
            seen.add(command[i + 1])
    return [c for c, k in zip(command, keep) if k]


def _remove_orphan_namespaces():
    """Namespaces of a harness whose test process is gone (killed with SIGKILL, e.g. by a
    ctest timeout): their names carry the creator's pid."""
    for line in run(["ip", "netns", "list"], check=False)[1].splitlines():
        m = re.match(r"(pf-[a-z]+(\d+)-(?:hosta|hostb|wire))\b", line)
        if m and not os.path.exists(f"/proc/{m.group(2)}"):
            run(["ip", "netns", "del", m.group(1)], check=False)
            shutil.rmtree(f"/etc/netns/{m.group(1)}", ignore_errors=True)
            log(f"removed the namespace {m.group(1)} of a test that is gone")


@contextlib.contextmanager
def two_hosts(tag="t", delay_ms=None, rate="1gbit"):
    """Yields a TwoHosts that is up; takes it down (namespaces, /etc/netns files, the wire
    process) on the way out, whatever happened."""
    require_root("network namespaces")
    require_tools("ip", "tc", "unshare", "ping", *(["ethtool"] if delay_ms is not None else []))
    _remove_orphan_namespaces()
    hosts = TwoHosts(f"{tag}{os.getpid()}", delay_ms, rate)
    try:
        try:
            run(["ip", "netns", "add", hosts.prefix + "-probe"], timeout=30)
            run(["ip", "netns", "del", hosts.prefix + "-probe"], timeout=30)
        except AssertionError as e:
            skip(f"cannot make network namespaces here: {e}")
        hosts.up()
        yield hosts
    finally:
        hosts.down()
        left = run(["ip", "netns", "list"], check=False)[1]
        assert hosts.prefix not in left, f"namespaces left: {left}"
