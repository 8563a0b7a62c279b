"""Attention flow's time against its size: the measurements behind its refusal limit.

`attnlab.viz.attention_flow` solves T * T maximum-flow problems per example on a graph of
L * T * T edges, so its time grows like L * T**4 ("work"). This script times it on random
softmax attention (4 heads, batch 1) at a few (layers, tokens) sizes up to the default
limit FLOW_WORK_LIMIT, prints seconds and microseconds per unit of work, and reports the
time of the largest size that is still accepted (goal: about ten seconds or less).
Attention rollout of the same weights is timed alongside for scale.

Usage:
    python benchmarks/attention_flow.py           # up to the limit (the last size ~10 s)
    python benchmarks/attention_flow.py --smoke   # tiny sizes, proves it still runs
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness  # noqa: E402  (sets up sys.path; this script needs no TensorFlow)

GOAL_SECONDS = 10.0


def softmax_layers(rng, layers, tokens, heads=4, sharpness=2.0):
    import numpy as np

    out = []
    for _ in range(layers):
        scores = rng.normal(size=(1, heads, tokens, tokens)) * sharpness
        e = np.exp(scores - scores.max(-1, keepdims=True))
        out.append(e / e.sum(-1, keepdims=True))
    return out


def main(argv=None):
    args = _harness.parse_args(__doc__.splitlines()[0], None, argv)
    import numpy as np

    from attnlab.viz.attention_flow import FLOW_WORK_LIMIT, attention_flow, flow_work
    from attnlab.viz.rollout import attention_rollout

    # At most 3 repeats: the largest size takes about ten seconds each time.
    repeats = min(args.repeats, 3)
    print("# attention_flow")
    print("repeats %d (median), %s" % (repeats, _harness.load_line()), flush=True)
    at_limit = int((FLOW_WORK_LIMIT / 4.0) ** 0.25)   # tokens of 4 layers at the limit
    sizes = [(2, 4), (2, 8), (4, 8)] if args.smoke else \
        [(2, 16), (4, 16), (12, 16), (2, 32), (4, 32), (12, 32), (4, at_limit)]
    rng = np.random.default_rng(0)
    rows, last = [], None
    for layers, tokens in sizes:
        weights = softmax_layers(rng, layers, tokens)
        flow_times, rollout_times = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            attention_flow(weights)
            flow_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            attention_rollout(weights)
            rollout_times.append(time.perf_counter() - start)
        flow_s = _harness.Timing([t * 1e3 for t in flow_times]).median / 1e3
        rollout_ms = _harness.Timing([t * 1e3 for t in rollout_times]).median
        work = flow_work(1, layers, tokens)
        rows.append(("L=%d T=%d" % (layers, tokens), "%.3g" % work, "%.3f" % flow_s,
                     "%.2f" % (flow_s / work * 1e6), "%.2f" % rollout_ms))
        last = (layers, tokens, flow_s)
    _harness.table("attention_flow, batch 1, 4 heads, random softmax attention; limit %.3g"
                   % FLOW_WORK_LIMIT,
                   ["case", "work L*T^4", "flow s", "flow us per work", "rollout ms"], rows)
    layers, tokens, seconds = last
    _harness.summary("attention flow at the largest size tried (L=%d T=%d)" % (layers, tokens),
                     "%.1f s" % seconds, "<= %.0f s at the limit" % GOAL_SECONDS,
                     seconds <= GOAL_SECONDS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
