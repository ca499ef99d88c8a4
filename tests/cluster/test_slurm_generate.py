"""A tp 2 x pp 2 generate job (configs/synthetic-llama-tp2-pp2.yaml) under the local Slurm gives mpirun's greedy ids:

  1. mpirun -np 4 (the reference), outside Slurm;
  2. sbatch of cluster/sbatch/generate.sbatch through submit.sh, ranks started by
     `srun --mpi=pmix` (the task count from `parafuse config --world-size`);
  3. the same template with mpirun inside the allocation;
  4. `srun --mpi=pmix -n 4` directly;
  5. a template asked for 3 tasks fails, with the launcher's message.

Every rank prints its placement (host, rank, tp rank, pp stage, device, where the local rank
came from); the srun runs must say Slurm's SLURM_LOCALID and PMIx. Starts the local Slurm
(cluster/local-slurm.sh) under a temporary folder and stops it, also on failure.
"""
import os
import re
import sys
import tempfile
import time

import cluster_fixture as cf

CONFIG = os.path.join(cf.REPO, "configs", "synthetic-llama-tp2-pp2.yaml")  # tp 2 x pp 2
TOKENS = 12


def generate_args():
    return ["generate", "--config", CONFIG, "--prompt-ids", cf.PROMPT_IDS, "--print-ids", "-n",
            str(TOKENS)]


def check_placement(output, launcher, source):
    lines = re.findall(r"rank (\d)/4: stage (\d)/2, tp (\d)/2, local rank \d/4 \(([^)]*)\), "
                       r"host (\S+), backend cpu device (\d)", output)
    assert sorted(int(l[0]) for l in lines) == [0, 1, 2, 3], f"placement lines:\n{output}"
    for rank, stage, tp, src, _host, _device in lines:
        assert int(stage) == int(rank) // 2 and int(tp) == int(rank) % 2, lines
        assert src == source, (src, source)
    assert f"launched by {launcher}" in output, f"no 'launched by {launcher}':\n{output}"


def main():
    cf.require_root("the local Slurm")
    cf.require_tools("sbatch", "srun", "mpirun")
    t0 = time.monotonic()
    code, out = cf.run([*cf.MPIRUN, "-np", "4", cf.BINARY, *generate_args()], timeout=120)
    reference = cf.parse_ids(out)
    check_placement(out, "Open MPI", "OMPI_COMM_WORLD_LOCAL_RANK")
    cf.log(f"mpirun -np 4: {reference} ({time.monotonic() - t0:.1f} s)")
    assert len(reference) == TOKENS

    with cf.local_slurm() as slurm, tempfile.TemporaryDirectory(prefix="pf-jobs-") as jobs:
        def submit(launcher, extra_sbatch="", config=CONFIG):
            t = time.monotonic()
            code, out = slurm.command(
                cf.SUBMIT, "--launcher", launcher, "--gpus-per-node", "0",
                "--sbatch", f"--parsable --overcommit --output={jobs}/%j.out {extra_sbatch}",
                "generate", config, "--prompt-ids", cf.PROMPT_IDS, "--print-ids", "-n",
                str(TOKENS))
            job_id = out.strip().splitlines()[-1].split(";")[0]
            state, exit_code = slurm.wait_job(job_id, timeout=120)
            with open(os.path.join(jobs, f"{job_id}.out")) as f:
                log = f.read()
            cf.log(f"sbatch ({launcher}): job {job_id} {state} exit {exit_code} after "
                   f"{time.monotonic() - t:.1f} s")
            return state, exit_code, log

        # 2. sbatch + srun --mpi=pmix
        state, exit_code, log = submit("srun")
        assert state == "COMPLETED" and exit_code == "0:0", (state, exit_code, log)
        assert "tp x pp = 4 ranks; the allocation has 4 tasks" in log, log
        ids = cf.parse_ids(log)
        check_placement(log, "Slurm (PMIx)", "SLURM_LOCALID")
        assert ids == reference, f"sbatch+srun {ids} != mpirun {reference}\n{log}"

        # 3. sbatch + mpirun inside the allocation
        state, exit_code, log = submit("mpirun")
        assert state == "COMPLETED" and exit_code == "0:0", (state, exit_code, log)
        ids = cf.parse_ids(log)
        check_placement(log, "Open MPI", "OMPI_COMM_WORLD_LOCAL_RANK")
        assert ids == reference, f"sbatch+mpirun {ids} != mpirun {reference}\n{log}"

        # 4. srun --mpi=pmix directly
        t = time.monotonic()
        code, out = slurm.command("srun", "--mpi=pmix", "-n", "4", "--overcommit", "-K",
                                  cf.BINARY, *generate_args(), timeout=120)
        ids = cf.parse_ids(out)
        check_placement(out, "Slurm (PMIx)", "SLURM_LOCALID")
        cf.log(f"srun --mpi=pmix -n 4: {ids} ({time.monotonic() - t:.1f} s)")
        assert ids == reference, f"srun {ids} != mpirun {reference}\n{out}"

        # 5. the wrong number of tasks: the template runs, parafuse refuses with its message
        state, exit_code, log = submit("srun", "--ntasks=3")
        assert state == "FAILED" and exit_code != "0:0", (state, exit_code, log)
        expected = ("tp=2 x pp=2 = 4 ranks, but the job has 3 (Slurm (PMIx)): ask for 4 "
                    f"(srun -n 4 / sbatch --ntasks=4; `parafuse config --world-size {CONFIG}`")
        assert expected in log, f"expected '{expected}' in:\n{log}"
        cf.log(f"3 tasks for tp x pp = 4: {state} {exit_code}: "
               f"{next(l for l in log.splitlines() if 'ask for 4' in l).strip()}")
    cf.log(f"passed in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
