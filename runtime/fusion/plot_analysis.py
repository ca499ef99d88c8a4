#!/usr/bin/env python3
"""Plots of a `parafuse analyze` result (analysis.json), for people deciding what to fuse.

  dependency.png  the block-wise dependency matrix of the FFN candidates (the FFN Fusion
                  paper's figure): entry (i, j) = how much FFN j's output changes when FFN i is
                  removed. Log color scale, because the interesting structure (near-independent
                  neighbours) sits orders of magnitude below the strongly coupled pairs.
  blocks.png      per block, the cosine distance between each sublayer's input and output and
                  the norm ratio ||f(x)|| / ||x||, attention and FFN side by side.

Usage: plot_analysis.py ANALYSIS_JSON OUT_DIR. Exit code 3 when matplotlib is missing (the
launcher turns that into a warning and keeps the JSON).
"""
import json
import os
import sys

try:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LogNorm
except ImportError as error:
    print(f"plot_analysis.py: matplotlib is not available ({error}); "
          "install python3-matplotlib (cluster/setup.sh does)", file=sys.stderr)
    sys.exit(3)


def title_of(analysis):
    model = os.path.basename(str(analysis["model"]).rstrip("/")) or analysis["model"]
    removed = analysis.get("removed_attention") or []
    extra = f", attention removed at {removed}" if removed else ""
    return f"{model} ({analysis['tokens']} tokens{extra})"


def plot_dependency(analysis, path):
    ids = analysis["candidates"]
    heads = analysis.get("candidate_has_attention", [False] * len(ids))
    matrix = analysis["dependency"]
    n = len(ids)
    size = max(5.0, min(16.0, 0.32 * n + 3.0))
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    if n < 2:
        ax.text(0.5, 0.5, "fewer than 2 FFN candidates: no dependency matrix\n"
                "(remove attention with --plan to make attention-free blocks)",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    else:
        positive = [v for row in matrix for v in row if v > 0]
        low = min(positive) if positive else 1e-12
        high = max(positive) if positive else 1.0
        if high <= low:
            high = low * 10
        # Only i < j is measured; the rest is masked (drawn blank), zeros clipped to the floor.
        data = np.ma.masked_all((n, n))
        for i in range(n):
            for j in range(i + 1, n):
                data[i, j] = max(matrix[i][j], low)
        image = ax.imshow(data, norm=LogNorm(vmin=low, vmax=high), cmap="viridis",
                          interpolation="nearest")
        colorbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        # Labelled ticks spread evenly on the log scale, also when it spans less than a decade.
        ticks = np.geomspace(low, high, 6)
        colorbar.set_ticks(ticks)
        colorbar.set_ticklabels([f"{t:.2g}" for t in ticks])
        colorbar.ax.minorticks_off()
        colorbar.set_label("cosine distance of FFN j's output without FFN i")
        labels = [f"{b}*" if h else str(b) for b, h in zip(ids, heads)]
        step = max(1, n // 40)
        ax.set_xticks(range(0, n, step))
        ax.set_xticklabels(labels[::step], rotation=90, fontsize=8)
        ax.set_yticks(range(0, n, step))
        ax.set_yticklabels(labels[::step], fontsize=8)
        ax.set_xlabel("block j (FFN observed)")
        ax.set_ylabel("block i (FFN removed)")
        if any(heads):
            ax.text(0.0, -0.12, "* block keeps its attention (opens a run)",
                    transform=ax.transAxes, fontsize=8, va="top")
    ax.set_title(f"FFN block-wise dependency\n{title_of(analysis)}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_blocks(analysis, path):
    attention = {s["block"]: s for s in analysis["sublayers"] if s["kind"] == "attention"}
    ffn = {s["block"]: s for s in analysis["sublayers"] if s["kind"] == "ffn"}
    blocks = sorted(set(attention) | set(ffn))
    removed = set(analysis.get("removed_attention") or [])
    width = max(8.0, min(24.0, 0.28 * len(blocks) + 4.0))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(width, 7.5), sharex=True)
    bar = 0.4
    for ax, key, label in ((top, "cosine_distance", "cosine distance 1 - cos(x, x + f(x))"),
                           (bottom, "norm_ratio", "norm ratio ||f(x)|| / ||x||")):
        xa = [b - bar / 2 for b in blocks if b in attention]
        ya = [attention[b][key] for b in blocks if b in attention]
        xf = [b + bar / 2 for b in blocks if b in ffn]
        yf = [ffn[b][key] for b in blocks if b in ffn]
        ax.bar(xa, ya, width=bar, color="tab:orange", label="attention")
        ax.bar(xf, yf, width=bar, color="tab:blue", label="FFN")
        ax.set_ylabel(label)
        positive = [v for v in ya + yf if v > 0]
        if positive and max(positive) / min(positive) > 20:  # one outlier (block 0) hides the rest
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
        for b in removed:
            ax.axvspan(b - 0.5, b + 0.5, color="grey", alpha=0.15, lw=0)
    top.legend(loc="upper right")
    top.set_title(f"Sublayer importance per block\n{title_of(analysis)}"
                  + ("\n(grey: attention removed by the plan)" if removed else ""))
    step = max(1, len(blocks) // 40)
    bottom.set_xticks(blocks[::step])
    bottom.set_xlabel("block")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        analysis = json.load(f)
    out_dir = argv[2]
    plot_dependency(analysis, os.path.join(out_dir, "dependency.png"))
    plot_blocks(analysis, os.path.join(out_dir, "blocks.png"))
    print(f"wrote {os.path.join(out_dir, 'dependency.png')} and "
          f"{os.path.join(out_dir, 'blocks.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
