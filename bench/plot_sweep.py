#!/usr/bin/env python3
"""Draws `parafuse bench --json` sweeps (and, dashed, `parafuse predict --json` predictions):

  1. output tokens/s against batch size, one line per layout or model (and input/output length);
  2. tokens/s per user against total tokens/s: the latency-throughput curve, each point
     labelled with its batch size.

    python3 bench/plot_sweep.py bench-results/tp1.json bench-results/tp3.json --out bench-results/sweep

writes sweep-throughput.png and sweep-latency.png. Needs matplotlib (python3-matplotlib).
"""
import argparse
import json
import os
import sys

try:
    import matplotlib
except ImportError:
    # Debian's python3-matplotlib serves /usr/bin/python3, which a pyenv or virtualenv python3
    # earlier in PATH does not see: run again under it.
    if os.path.exists("/usr/bin/python3") and os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    sys.exit("plot_sweep.py needs matplotlib (apt-get install python3-matplotlib)")

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def series_of(path, metric):
    """[(name, dashed, [(batch, tokens/s, tokens/s/user)])] from one JSON file."""
    with open(path) as f:
        doc = json.load(f)
    kind = doc.get("benchmark")
    out = []
    if kind == "parafuse bench":
        base = doc.get("label") or "{} tp{} pp{}".format(
            os.path.basename(doc["model"]), doc["tp"], doc["pp"])
        groups = {}
        for r in doc["results"]:
            key = (r.get("input_len", r.get("prompt_tokens")), r.get("output_len", r.get("decode_steps")))
            total = r["decode_tokens_per_second"] if metric == "decode" else r.get(
                "output_tokens_per_second", r["decode_tokens_per_second"])
            groups.setdefault(key, []).append((r["batch"], total, r["tokens_per_second_per_user"]))
        for (inp, outp), pts in groups.items():
            name = base if len(groups) == 1 else f"{base} in {inp} out {outp}"
            out.append((name, False, sorted(pts)))
    elif kind == "parafuse predict":
        groups = {}
        for r in doc["layouts"]:
            if not r["fits"]:
                continue
            groups.setdefault((r["tp"], r["pp"]), []).append(
                (r["batch"], r["tokens_per_s"], r["tokens_per_s_per_user"]))
        model = os.path.splitext(os.path.basename(doc["model"]))[0]
        for (tp, pp), pts in groups.items():
            out.append((f"predicted {model} tp{tp} pp{pp}", True, sorted(pts)))
    else:
        sys.exit(f"{path}: not a `parafuse bench --json` or `parafuse predict --json` file")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", nargs="+", help="bench or predict JSON files")
    ap.add_argument("--out", required=True, help="prefix of the PNGs (PREFIX-throughput.png, PREFIX-latency.png)")
    ap.add_argument("--metric", choices=["output", "decode"], default="output",
                    help="total tokens/s: whole requests (prefill + decode) or decode steps alone")
    ap.add_argument("--title", default="", help="a line above both plots (the machine, its load)")
    args = ap.parse_args()
    series = [s for path in args.json for s in series_of(path, args.metric)]
    what = "output tokens/s" if args.metric == "output" else "decode tokens/s"

    fig, ax = plt.subplots(figsize=(8, 4.8))
    for name, dashed, pts in series:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "--" if dashed else "-", marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size (sequences decoded together)")
    ax.set_ylabel(f"{what} (all users)")
    ax.set_title(f"Throughput against batch size\n{args.title}".strip(), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    throughput_png = f"{args.out}-throughput.png"
    fig.savefig(throughput_png, dpi=120)

    fig, ax = plt.subplots(figsize=(8, 4.8))
    for name, dashed, pts in series:
        xs, ys = [p[1] for p in pts], [p[2] for p in pts]
        ax.plot(xs, ys, "--" if dashed else "-", marker="o", label=name)
        for b, x, y in pts:
            ax.annotate(f"b{b}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(f"{what} (all users)")
    ax.set_ylabel("tokens/s per user (1 / TPOT)")
    ax.set_title(f"Latency-throughput curve\n{args.title}".strip(), fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    latency_png = f"{args.out}-latency.png"
    fig.savefig(latency_png, dpi=120)
    print(f"wrote {throughput_png} and {latency_png}")


if __name__ == "__main__":
    main()
