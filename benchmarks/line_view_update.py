#!/usr/bin/env python3
"""Kernel-side cost of one TokenLineView update at 128 and 512 tokens, 4 heads.

Self-attention maps with a local band (as explorer_update.py), "image" backend (Agg,
off-screen, PNG bytes ready to send). Updates timed, median over the repeats:
  select token   the selected query moves to another token (its lines only are drawn)
  toggle head    one head is switched off or on again (all queries' lines of 3-4 heads;
                 the other heads' lines are composited from their kept layers)
  new threshold  every line drawn anew (shown for scale; not one of the goals)
each with the default window (the first 128 tokens per column) and, at 512 tokens, with
all 512 tokens shown. Goals (select token and toggle head): 50 ms at 128 tokens, 200 ms
at 512. The table prints the lines drawn, the milliseconds and ms / goal. A script, not a
test: times depend on the machine and its load.

Usage: python benchmarks/line_view_update.py [--repeats N] [--smoke]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness  # noqa: E402  (sets up sys.path)
import matplotlib  # noqa: E402

matplotlib.use("Agg")

import numpy as np  # noqa: E402

from attnlab.viz.line_view import TokenLineView  # noqa: E402

GOAL_MS = {128: 50.0, 512: 200.0}
HEADS = 4


def band_attention(size, heads=HEADS, seed=0):
    """(1, heads, size, size) softmax weights concentrated near the diagonal."""
    rng = np.random.default_rng(seed)
    distance = np.abs(np.arange(size)[:, None] - np.arange(size)[None, :])
    scores = rng.normal(size=(1, heads, size, size)) * 2 - distance * 0.1
    e = np.exp(scores - scores.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def _median_ms(updates, view, warmup, repeats):
    import time

    for update in updates[:warmup]:
        view.set_state(**update)
    times, lines = [], []
    for i in range(repeats):
        update = updates[(warmup + i) % len(updates)]
        start = time.perf_counter()
        view.set_state(**update)
        times.append((time.perf_counter() - start) * 1000.0)
        lines.append(len(view.lines()))
    return _harness.Timing(times), int(np.median(lines))


def bench(size, window, warmup, repeats):
    """{update name: (Timing, lines drawn)} for one size and token window."""
    tokens = ["t%d" % i for i in range(size)]
    view = TokenLineView({"layer0": band_attention(size)}, tokens, tokens, backend="image",
                         query_window=window)
    start, stop = view.state["query_window"]
    queries = [start + (stop - start) * i // 7 for i in range(1, 7)]
    results = {"select token": _median_ms(
        [{"selected_query": q} for q in queries], view, warmup, repeats)}
    view.set_state(selected_query=None)
    heads = [[h for h in range(HEADS) if h != off] for off in range(HEADS)]
    toggles = [{"heads": chosen} for pair in zip(heads, [list(range(HEADS))] * HEADS)
               for chosen in pair]
    results["toggle head"] = _median_ms(toggles, view, warmup, repeats)
    # Every line drawn anew: no head's layer can be reused (the worst case, not a goal).
    thresholds = [{"threshold": t} for t in (0.0105, 0.01)]
    results["new threshold (all lines redrawn)"] = _median_ms(thresholds, view, warmup,
                                                              repeats)
    return results


def main(argv=None):
    args = _harness.parse_args(__doc__.splitlines()[0], argv=argv)
    cases = [(128, None), (512, None), (512, (0, 512))]
    if args.smoke:
        cases = [(16, None), (24, (0, 24))]
    print("# line_view_update: TokenLineView updates, %d heads, image backend; %s"
          % (HEADS, _harness.load_line()))
    rows, worst = [], {}
    for size, window in cases:
        shown = "all %d" % size if window else "first %d" % min(size, 128)
        goal = GOAL_MS.get(size, GOAL_MS[128])
        for update, (timing, lines) in bench(size, window, args.warmup, args.repeats).items():
            label = "%d tokens, %s shown, %s" % (size, shown, update)
            rows.append([label, lines, timing, "%.0f" % goal, "%.2f" % (timing.median / goal)])
            if update in ("select token", "toggle head"):
                key = (size, shown)
                worst[key] = max(worst.get(key, 0.0), timing.median)
    _harness.table("One update (ms, median (min-max) of %d, after %d warm-up)"
                   % (args.repeats, args.warmup),
                   ["case", "lines drawn", "update ms", "goal ms", "ms / goal"], rows)
    for (size, shown), ms in worst.items():
        goal = GOAL_MS.get(size, GOAL_MS[128])
        _harness.summary("line view update %d tokens (%s shown)" % (size, shown),
                         "%.1f ms" % ms, "< %.0f ms" % goal, ms < goal)


if __name__ == "__main__":
    main()
