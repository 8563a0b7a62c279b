#!/usr/bin/env python3
"""Kernel-side cost of one AttentionExplorer update versus redrawing a heatmap from scratch.

For 64 x 64 and 512 x 512 maps (Agg, off-screen, PNG bytes ready to send) it times:
  new figure       a new matplotlib figure with a labelled imshow, rendered to PNG
  seaborn redraw   ax.clear() + seaborn.heatmap on a reused figure, rendered to PNG
  explorer update  one move of the explorer's step slider (set_data, blit of the image
                   artists, PNG encode), median over the moves, drawn at the explorer's
                   pixel ratio (default 1, as the others; 2 draws four times the pixels)
and prints the ratio of the update to a new figure and the target (15 ms at 64, 50 ms at
512). Timings depend on the machine and its load; this is a script, not a test.

Usage: python benchmarks/explorer_update.py [--moves N] [--sizes 64 512] [--pixel-ratio R]
"""
import argparse
import io
import os
import statistics
import sys
import time

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from attnlab.viz.explorer import AttentionExplorer  # noqa: E402
from attnlab.viz.plots import plot_attention  # noqa: E402
from attnlab.viz.snapshots import AttentionSnapshot  # noqa: E402

TARGET_MS = {64: 15.0, 512: 50.0}


def attention_maps(size, steps, seed=0):
    """Softmax maps with a local band that sharpens over steps: like attention in training."""
    rng = np.random.default_rng(seed)
    distance = np.abs(np.arange(size)[:, None] - np.arange(size)[None, :])
    maps = []
    for step in range(steps):
        scores = rng.normal(size=(1, 2, size, size)) - distance * (0.05 + 0.1 * step)
        e = np.exp(scores - scores.max(-1, keepdims=True))
        maps.append((e / e.sum(-1, keepdims=True)).astype(np.float32))
    return maps


def median_ms(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def new_figure(data, tokens):
    fig = Figure(figsize=(4.2, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    plot_attention(data, tokens, tokens, ax=fig.add_subplot(), colorbar=False)
    fig.savefig(io.BytesIO(), format="png")


def seaborn_redraw(fig, ax, data, tokens):
    import seaborn as sns

    ax.clear()
    step = max(1, len(tokens) // 24)
    sns.heatmap(data, ax=ax, cbar=False, xticklabels=step, yticklabels=step)
    fig.savefig(io.BytesIO(), format="png")


def bench(size, moves, pixel_ratio=None):
    steps = 8
    maps = attention_maps(size, steps)
    tokens = ["t%d" % i for i in range(size)]
    frames = [AttentionSnapshot(100 * (i + 1), i, {"layer0": w}, [tokens], [tokens])
              for i, w in enumerate(maps)]
    options = {} if pixel_ratio is None else {"pixel_ratio": pixel_ratio}
    explorer = AttentionExplorer(frames, backend="image", **options)
    slider = explorer.controls["step"]
    position = [0]

    def move():
        position[0] = (position[0] + 1) % steps
        slider.value = position[0]

    move()  # warm up: first draws, caches
    update = median_ms(move, moves)

    data = maps[0][0, 0]
    new_figure(data, tokens)
    new = median_ms(lambda: new_figure(data, tokens), max(3, moves // 4))

    fig = Figure(figsize=(4.2, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    seaborn_repeats = 3 if size > 128 else max(3, moves // 4)
    seaborn = median_ms(lambda: seaborn_redraw(fig, ax, data, tokens), seaborn_repeats)
    return new, seaborn, update


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=30, help="slider moves per size")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--pixel-ratio", type=float, default=None,
                        help="the explorer's pixel_ratio (default: the explorer's default)")
    parser.add_argument("--smoke", action="store_true",
                        help="a few moves at 64 x 64 only: proves the script still runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.moves, args.sizes = 3, [64]
    header = ("size", "new figure ms", "seaborn redraw ms", "explorer update ms",
              "update/new", "target ms", "result")
    rows = []
    for size in args.sizes:
        new, seaborn, update = bench(size, args.moves, args.pixel_ratio)
        target = TARGET_MS.get(size)
        rows.append(("%d x %d" % (size, size), "%.1f" % new, "%.1f" % seaborn,
                     "%.1f" % update, "%.3f" % (update / new),
                     "-" if target is None else "%.0f" % target,
                     "-" if target is None else ("pass" if update < target else "FAIL")))
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(str(cell).rjust(width) for cell, width in zip(row, widths)))
    ratio = "default" if args.pixel_ratio is None else "%g" % args.pixel_ratio
    print("(median of %d slider moves, Agg backend, PNG ready to send, explorer pixel_ratio "
          "%s; load average %s)" % (args.moves, ratio, " ".join("%.1f" % x
                                                              for x in os.getloadavg())))


if __name__ == "__main__":
    main()
