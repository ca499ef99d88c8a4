#!/usr/bin/env python3
"""Sums ncu's per-kernel durations (bench/device/run.sh profile) per decode step and kernel.

The profiled range holds N eager steps then N replayed steps (bench_gpu --profile-steps N), so
the launches split into 2N equal chunks. Prints each chunk's kernel count and GPU time, then
the first eager and the first replayed step by kernel name (time, count), largest first.
  python3 bench/device/ncu_summary.py ncu.log [--steps 2]
"""
import argparse
import collections
import csv
import sys


def rows(path):
    quoted = [line for line in open(path, errors="replace") if line.startswith('"')]
    reader = csv.reader(quoted)
    header = next(reader)
    name_col = header.index("Kernel Name")
    time_col = header.index("gpu__time_duration.sum")
    for r in reader:
        try:
            yield r[name_col], float(r[time_col].replace(",", ""))
        except (ValueError, IndexError):
            continue  # the units row


def short(name, width=90):
    name = name.split("(")[0] if not name.startswith("void ") else name[5:].split("(")[0]
    return name if len(name) <= width else name[: width - 3] + "..."


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("log")
    ap.add_argument("--steps", type=int, default=2, help="bench_gpu --profile-steps")
    a = ap.parse_args()
    launches = list(rows(a.log))
    chunks = 2 * a.steps
    if not launches or len(launches) % chunks:
        sys.exit(f"{len(launches)} kernel launches do not split into {chunks} equal steps")
    per = len(launches) // chunks
    unit = 1e-3  # ns -> us
    for i in range(chunks):
        part = launches[i * per:(i + 1) * per]
        kind = "eager" if i < a.steps else "graph"
        print(f"step {i} ({kind}): {per} kernels, {sum(t for _, t in part) * unit:.1f} us GPU time")
    for i, kind in ((0, "eager"), (a.steps, "graph")):
        part = launches[i * per:(i + 1) * per]
        by = collections.defaultdict(lambda: [0.0, 0])
        for n, t in part:
            by[short(n)][0] += t
            by[short(n)][1] += 1
        total = sum(v[0] for v in by.values())
        print(f"\n{kind} step by kernel (us, launches, share):")
        for n, (t, c) in sorted(by.items(), key=lambda kv: -kv[1][0]):
            print(f"  {t * unit:9.1f} {c:5d} {100 * t / total:5.1f}%  {n}")


if __name__ == "__main__":
    main()
