"""Two hosts on one machine (network namespaces hosta and hostb joined by a veth pair; Open MPI
and UCX limited to TCP on that link): a tp 2 x pp 2 job with one pipeline stage per host gives
the single-rank greedy ids, with the MPI and the UCX transport between the stages, and its
traffic crosses the veth link. The model: configs/models/bench-llama-140m.json with seeded random
weights (SmolLM2's 9 heads do not split over tp 2).

  test_two_hosts.py            the correctness check (ctest)
  test_two_hosts.py --bench    also: decode tokens/s of pp across hosts (stage 0 on hosta, stage
                               1 on hostb) against tp across hosts (each TP pair split over the
                               hosts), on the plain link and on a shaped one (DELAY each way,
                               RATE; cluster_fixture.TwoHosts says how, as this kernel has no
                               netem)
  --delay-ms 1 --rate 1gbit --output-len 32 --json FILE
"""
import argparse
import json
import os
import re
import sys
import tempfile
import time

import cluster_fixture as cf

TOKENS = 12


def generate_args():
    return ["generate", "-m", cf.SYNTHETIC, "--prompt-ids", cf.PROMPT_IDS, "--print-ids", "-n",
            str(TOKENS), "--threads", "1"]


def placement(log):
    """{rank: host} from the placement lines."""
    return {int(r): h for r, h in re.findall(r"rank (\d)/4: [^\n]*?host (\S+),", log)}


# Where the ranks go (mpirun --map-by): slot fills hosta first (ranks 0,1 = stage 0 there,
# ranks 2,3 = stage 1 on hostb): the pipeline hand-off crosses the link, the all-reduces do
# not. node alternates (0,2 on hosta, 1,3 on hostb): every TP pair spans the link.
LAYOUTS = (("pp-across-hosts", "slot"), ("tp-across-hosts", "node"))


def bench(hosts, map_by, output_len, folder, label):
    out = os.path.join(folder, f"{label}.json")
    command = hosts.mpirun(4, [cf.BINARY, "bench", "-m", cf.SYNTHETIC, "--tp", "2", "--pp", "2",
                               "--threads", "1", "--batch", "1", "--input-len", "16",
                               "--output-len", str(output_len), "--json", out, "-q"],
                           map_by=map_by)
    before = hosts.link_bytes()
    code, log = cf.run(command, timeout=300, env=hosts.env())
    with open(out) as f:
        point = json.load(f)["results"][0]
    point["link_bytes"] = hosts.link_bytes() - before
    cf.log(f"{label} ({'shaped' if hosts.delay_ms is not None else 'plain veth'}): decode "
           f"{point['decode_tokens_per_second']:.2f} tok/s, TPOT {point['tpot_ms']['mean']:.1f} ms, "
           f"{point['all_reduces_per_step']:.0f} all-reduces per step, {point['link_bytes']} bytes "
           f"on the link")
    return point


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bench", action="store_true")
    parser.add_argument("--delay-ms", type=float, default=1.0)
    parser.add_argument("--rate", default="1gbit")
    parser.add_argument("--output-len", type=int, default=32)
    parser.add_argument("--json")
    args = parser.parse_args()
    t0 = time.monotonic()
    _, out = cf.run([cf.BINARY, *generate_args()], timeout=120)
    single = cf.parse_ids(out)
    cf.log(f"one rank: {single}")

    with cf.two_hosts("h") as hosts, tempfile.TemporaryDirectory(prefix="pf-2h-") as folder:
        for transport in ("mpi", "ucx"):
            before = hosts.link_bytes()
            command = hosts.mpirun(4, [cf.BINARY, *generate_args(), "--tp", "2", "--pp", "2",
                                       "--transport", transport])
            t = time.monotonic()
            _, log = cf.run(command, timeout=120, env=hosts.env())
            crossed = hosts.link_bytes() - before
            where = placement(log)
            assert where == {0: "hosta", 1: "hosta", 2: "hostb", 3: "hostb"}, \
                f"stage 0 must be on hosta and stage 1 on hostb: {where}\n{log}"
            ids = cf.parse_ids(log)
            cf.log(f"tp 2 x pp 2 over two hosts, transport {transport}: {ids} "
                   f"({time.monotonic() - t:.1f} s, {crossed} bytes over the veth link)")
            assert ids == single, f"two hosts {ids} != one rank {single}\n{log}"
            # Each of the 2 stage-0 ranks hands its stage-1 peer a (tokens, 1024) F32 activation
            # for the 10 prompt tokens and each of the 11 decode steps after the first token.
            activations = 2 * (10 + TOKENS - 1) * 1024 * 4
            assert crossed >= activations, \
                f"only {crossed} bytes crossed the link, fewer than the {activations} of the " \
                f"activations: the stages did not talk over TCP on the veth link"
        results = {}
        if args.bench:
            for label, map_by in LAYOUTS:
                results[label] = bench(hosts, map_by, args.output_len, folder, label)
    if args.bench:
        with cf.two_hosts("s", delay_ms=args.delay_ms, rate=args.rate) as hosts, \
                tempfile.TemporaryDirectory(prefix="pf-2h-") as folder:
            for label, map_by in LAYOUTS:
                results[label + " shaped"] = bench(hosts, map_by, args.output_len, folder, label)
            ping = hosts.ping_ms
        link = f"{args.delay_ms} ms each way (ping {ping} ms), tbf rate {args.rate}"
        cf.log(f"\ndecode tokens/s, tp 2 x pp 2, batch 1, {args.output_len} tokens (4 ranks on "
               f"this machine's {os.cpu_count()} cores); shaped link: {link}")
        cf.log(f"{'layout':<18}{'plain veth':>12}{'shaped':>12}   {'TPOT plain':>12}"
               f"{'TPOT shaped':>13}")
        for label, _ in LAYOUTS:
            plain, shaped = results[label], results[label + " shaped"]
            cf.log(f"{label:<18}{plain['decode_tokens_per_second']:>12.2f}"
                   f"{shaped['decode_tokens_per_second']:>12.2f}   "
                   f"{plain['tpot_ms']['mean']:>10.1f}ms{shaped['tpot_ms']['mean']:>11.1f}ms")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"link": link, "results": results}, f, indent=2)
    cf.log(f"passed in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
