"""`parafuse config`: what the batch templates ask the run YAML. --world-size prints tp x pp
alone (flags override the file); without it, KEY=VALUE lines a shell can eval; a bad YAML
fails with the strict reader's message (file, line, key) and exit code 1; no MPI, no model.
Then cluster/sbatch/submit.sh --print: the nodes and tasks it asks sbatch for (1 to N nodes of
8 GPUs) from that number.
"""
import os
import subprocess
import sys
import tempfile

import cluster_fixture as cf


def config(*args):
    p = subprocess.run([cf.BINARY, "config", *args], capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, OMPI_COMM_WORLD_SIZE=""))
    return p.returncode, p.stdout, p.stderr


def main():
    yaml = os.path.join(cf.REPO, "configs", "synthetic-llama-tp2-pp2.yaml")
    assert config("--world-size", yaml) == (0, "4\n", ""), config("--world-size", yaml)
    assert config("--world-size", yaml, "--tp", "4")[1] == "8\n"
    code, out, err = config(yaml)
    assert code == 0, err
    values = dict(line.split("=", 1) for line in out.splitlines())
    assert values["world_size"] == "4" and values["tp"] == "2" and values["pp"] == "2", values
    assert values["model"] == "'synthetic:configs/models/bench-llama-140m.json@1'", values
    # the KEY=VALUE lines are shell words: eval them
    shell = subprocess.run(["sh", "-c", f"eval \"$({cf.BINARY} config {yaml})\"; "
                            "echo \"$world_size $model\""], capture_output=True, text=True)
    assert shell.stdout == "4 synthetic:configs/models/bench-llama-140m.json@1\n", shell
    with tempfile.TemporaryDirectory() as d:
        bad = os.path.join(d, "bad.yaml")
        with open(bad, "w") as f:
            f.write("model: x.gguf\nparallel:\n  tp: 2\n  tpp: 3\n")
        code, out, err = config("--world-size", bad)
        assert code == 1 and out == "" and f"{bad}:4: unknown key 'tpp'" in err, (code, out, err)
        bad_key = err.strip()
        with open(bad, "w") as f:
            f.write("parallel:\n  pp: 2\n  pp_split: [0]\n")
        code, out, err = config("--world-size", bad)
        assert code == 1 and "pp_split" in err, (code, out, err)
    code, out, err = config("--world-size")
    assert code == 2, (code, out, err)

    # cluster/sbatch/submit.sh asks for what the YAML says, on nodes of 8 GPUs (1 to N nodes)
    def submit(*args):
        p = subprocess.run([cf.SUBMIT, "--print", *args], capture_output=True, text=True,
                           env=dict(os.environ, PF_BIN=cf.BINARY), timeout=30)
        assert p.returncode == 0, p
        return p.stdout
    with tempfile.TemporaryDirectory() as d:
        for tp, pp, layout in ((8, 2, "--nodes=2 --ntasks=16 --ntasks-per-node=8 --gpus-per-node=8"),
                               (8, 3, "--nodes=3 --ntasks=24 --ntasks-per-node=8 --gpus-per-node=8"),
                               (2, 2, "--nodes=1 --ntasks=4 --gpus-per-node=4")):
            path = os.path.join(d, f"tp{tp}pp{pp}.yaml")
            with open(path, "w") as f:
                f.write(f"model: m.gguf\nparallel:\n  tp: {tp}\n  pp: {pp}\n")
            out = submit("generate", path, "-p", "hi")
            assert f"sbatch {layout} " in out and "generate.sbatch" in out, (layout, out)
        assert "PF_LAUNCHER=mpirun" in submit("--launcher", "mpirun", "serve", path)
        out = submit("--gpus-per-node", "0", "bench", path)
        assert "sbatch --nodes=1 --ntasks=4 --chdir" in out, out
    cf.log(f"parafuse config: --world-size 4 (8 with --tp 4); KEY=VALUE lines eval; bad YAML: "
           f"exit 1 with '{bad_key}'; submit.sh: tp 8 x pp 2 -> 2 nodes x 8 GPUs, 8 x 3 -> 3, "
           f"2 x 2 -> 1 node with 4 GPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
