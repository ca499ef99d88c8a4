"""A tp 2 x pp 2 job whose rank fails: the whole job must end, quickly, saying which rank.

  test_faults.py kill  --launcher mpirun|srun --phase load|decode
      SIGKILL to world rank 2 (stage 1, tp 0) while the model loads or while it decodes: every
      rank is gone within 30 s, the launcher exits non-zero and its log names rank 2.
  test_faults.py wedge --launcher mpirun|srun [--timeout collective|transport]
      SIGSTOP to world rank 3 while it decodes, with timeouts.collective_seconds: 10: its TP
      partner's all-reduce times out, names the collective, the group and rank 3 as the one that
      did not arrive, and the job ends within 30 s. With --timeout transport (tp 1 x pp 2), rank 0
      stops and timeouts.transport_seconds: 10 fires first: the next stage's receive names
      peer 0.
  test_faults.py unreadable
      on two hosts (network namespaces), the model file is empty on hostb: its ranks fail while
      loading and the job stops at once with their reason, every rank exiting non-zero.

The job is `parafuse bench` (one sequence, thousands of decode steps: it is decoding whenever
it is signalled after setup) on configs/models/bench-llama-140m.json with seeded random weights
(tp 2 needs even head counts); the unreadable case uses the SmolLM2 GGUF file at pp 4. srun runs under the local Slurm, with -K (--kill-on-bad-exit).
Prints the measured seconds. Everything started is killed at the end, also on failure.
"""
import argparse
import os
import re
import signal
import sys
import tempfile
import time

import cluster_fixture as cf

GONE_WITHIN = 30.0
SETUP_DONE = r"pipeline split \(tp=\d, pp=2"
LOADING = r"rank 3/4: stage 1/2, tp 1/2"  # the last placement line: the weights load next


def bench_args(config, model):
    return ["bench", "--config", config, "-m", model, "--batch", "1", "--input-len", "8",
            "--output-len", "100000"]


def write_config(folder, tp=2, pp=2, collective_seconds=60, transport_seconds=60):
    path = os.path.join(folder, "run.yaml")
    with open(path, "w") as f:
        f.write(f"parallel:\n  tp: {tp}\n  pp: {pp}\nthreads: 1\nbatch:\n"
                f"  kv_cache_tokens: 200000\ntimeouts:\n  collective_seconds: "
                f"{collective_seconds}\n  transport_seconds: {transport_seconds}\n")
    return path


def launch(launcher, slurm, args, marker, ranks=4):
    env = cf.env_with(PF_TEST_MARKER=marker)
    if launcher == "mpirun":
        return cf.Job([*cf.MPIRUN, "-np", str(ranks), "-x", "PF_TEST_MARKER", cf.BINARY, *args],
                      env=env, name="mpirun")
    env.update(slurm.env, PF_TEST_MARKER=marker)
    return cf.Job(["srun", "--mpi=pmix", "-n", str(ranks), "--overcommit", "-K", cf.BINARY, *args],
                  env=env, name="srun")


def dead_rank_named(launcher, log, rank):
    if launcher == "mpirun":
        return re.search(rf"process rank {rank} with PID \d+ on node \S+ exited on signal 9", log)
    return re.search(rf"task {rank}: Killed", log)


def kill_test(launcher, phase, slurm, folder):
    config = write_config(folder)
    marker = f"kill-{launcher}-{phase}-{os.getpid()}"
    job = launch(launcher, slurm, bench_args(config, cf.SYNTHETIC), marker)
    try:
        pids = cf.wait_ranks(marker, 4, timeout=60)
        if phase == "load":
            # Rank 0 logs the placement once every rank has opened the model; then every rank
            # loads (here: generates and shards) its weights, and only then is setup done.
            job.wait_for(LOADING, timeout=60)
            time.sleep(0.1)
            loading = not re.search(SETUP_DONE, job.log())
        else:
            job.wait_for(SETUP_DONE, timeout=120)
            time.sleep(2.0)  # a few hundred decode steps in
        killed_at = time.monotonic()
        os.kill(pids[2], signal.SIGKILL)
        gone = cf.seconds_until_gone(list(pids.values()), GONE_WITHIN + 30)
        code = job.wait(GONE_WITHIN + 30)
        launcher_done = time.monotonic() - killed_at
        log = job.log()
        if phase == "load":
            assert loading, f"setup had already finished when rank 2 was killed:\n{log}"
        assert gone is not None, f"ranks still running {GONE_WITHIN + 30} s after the kill"
        assert code is not None and code != 0, f"{launcher} exit code {code}:\n{log}"
        assert dead_rank_named(launcher, log, 2), f"the log does not name rank 2:\n{log}"
        cf.log(f"{launcher}, SIGKILL of rank 2 during {phase}: every rank gone after "
               f"{gone:.2f} s, {launcher} exited {code} after {launcher_done:.2f} s")
        cf.log("  " + dead_rank_named(launcher, log, 2).group(0))
        assert gone <= GONE_WITHIN, f"ranks took {gone:.1f} s to go (limit {GONE_WITHIN} s)"
    finally:
        job.close()


def wedge_test(launcher, slurm, folder, timeout):
    # collective: tp 2 x pp 2; rank 3 stops; its TP partner (rank 2) waits in an all-reduce
    # (or the LM head's all-gather).
    # transport: tp 1 x pp 2; rank 0 (stage 0) stops; rank 1 waits to receive its activations,
    # and the transport timeout (10 s) comes before any collective's (30 s).
    ranks = 4
    if timeout == "collective":
        config = write_config(folder, collective_seconds=10)
        victim = 3
        # the all-reduce of a block or the all-gather of the vocab-parallel LM head
        # Rank 3 is usually stopped between collectives ("did not arrive"); on a loaded machine
        # it may have announced itself in a slow call and been stopped inside it.
        # Or stage 0's ranks time out first in the world broadcast of the sampled token, rank 2
        # being stuck in its TP group with rank 3: then ranks 2,3 are named.
        expected = (r"(all_reduce|all_gather) #\d+ on tp group of stage 1 \(world ranks 2,3\) "
                    r"did not complete within 10\.0 s: (world rank 3 did not arrive|every rank "
                    r"of the group arrived \(world ranks 2,3\), but the collective did not "
                    r"complete: a rank stopped inside it)[^\n]*"
                    r"|broadcast #\d+ on world \(world ranks 0,1,2,3\) did not complete within "
                    r"10\.0 s: world ranks 2,3 did not arrive[^\n]*")
    else:
        ranks = 2
        config = write_config(folder, tp=1, collective_seconds=30, transport_seconds=10)
        victim = 0
        expected = (r"recv from peer 0 \(tag \d+, \d+ bytes, mpi\) did not complete within "
                    r"10\.0 s[^\n]*")
    marker = f"wedge-{launcher}-{os.getpid()}"
    job = launch(launcher, slurm, bench_args(config, cf.SYNTHETIC), marker, ranks)
    stopped = None
    try:
        pids = cf.wait_ranks(marker, ranks, timeout=60)
        job.wait_for(SETUP_DONE, timeout=120)
        time.sleep(2.0)
        stopped = pids[victim]
        os.kill(stopped, signal.SIGSTOP)
        gone = cf.seconds_until_gone(list(pids.values()), 60)
        code = job.wait(60)
        log = job.log()
        assert gone is not None, f"ranks still running 60 s after SIGSTOP:\n{log}"
        assert code is not None and code != 0, f"{launcher} exit code {code}:\n{log}"
        line = re.search(expected, log)
        assert line, f"no {timeout} timeout naming rank {victim}:\n{log}"
        cf.log(f"{launcher}, SIGSTOP of rank {victim} during decode, {timeout} timeout 10 s: "
               f"every rank gone after {gone:.2f} s (launcher exit {code})\n  {line.group(0)}")
        assert gone <= GONE_WITHIN, f"the job took {gone:.1f} s to end (limit {GONE_WITHIN} s)"
    finally:
        if stopped:
            with cf.contextlib.suppress(ProcessLookupError):
                os.kill(stopped, signal.SIGKILL)
        job.close()


def unreadable_test(folder):
    cf.require_model()
    config = write_config(folder, tp=1, pp=4)  # SmolLM2: ranks 0,1 on hosta, 2,3 on hostb
    with cf.two_hosts("u") as hosts:
        empty = os.path.join(folder, "empty")
        open(empty, "w").close()
        command = hosts.mpirun(4, [cf.BINARY, *bench_args(config, cf.MODEL)])
        env = hosts.env(PF_NETNS_HIDE_hostb=f"{cf.MODEL}={empty}")
        started = time.monotonic()
        code, log = cf.run(command, timeout=120, env=env, check=False)
        took = time.monotonic() - started
        assert code != 0, f"exit code {code}:\n{log}"
        errors = [l for l in log.splitlines() if "parafuse: error" in l]
        assert len(errors) == 1, f"expected one error line (rank 0 speaks):\n{log}"
        named = re.search(r"parafuse: error on rank 2 \(host hostb; 1 more rank failed\): "
                          r"\S*SmolLM2-135M-Instruct.Q4_1.gguf: truncated", errors[0])
        assert named, f"the error does not name the failing rank, its host and file:\n{log}"
        cf.log(f"model unreadable on hostb: job ended with exit {code} after {took:.1f} s\n  "
               f"{errors[0]}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("case", choices=["kill", "wedge", "unreadable"])
    parser.add_argument("--launcher", choices=["mpirun", "srun"], default="mpirun")
    parser.add_argument("--phase", choices=["load", "decode"], default="decode")
    parser.add_argument("--timeout", choices=["collective", "transport"], default="collective")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="pf-faults-")
    try:
        if args.case == "unreadable":
            return unreadable_test(folder) or 0
        slurm_context = cf.local_slurm() if args.launcher == "srun" else cf.contextlib.nullcontext()
        with slurm_context as slurm:
            if args.case == "kill":
                kill_test(args.launcher, args.phase, slurm, folder)
            else:
                wedge_test(args.launcher, slurm, folder, args.timeout)
        return 0
    finally:
        cf.shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
