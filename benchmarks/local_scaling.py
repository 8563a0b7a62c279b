"""Target 3: local (sliding-window) attention: linear time in L, against a per-position loop.

Part 1 times attnlab.ops.local.local_attention (forward + backward, window 64) for L from
1k to 32k and fits the exponent of time ~ L^k (k = 1 is linear). Part 2 compares the
forward pass at B=4, L=512, window 16 with the obvious per-position Python loop (each
query attends to its keys i - w .. i + w, eager), checked to give the same output first.

Usage:
    python benchmarks/local_scaling.py           # the issue's cases
    python benchmarks/local_scaling.py --smoke   # tiny sizes, proves it still runs
"""
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness  # noqa: E402  (sets up sys.path and the TF log level)

BATCH, DEPTH = 4, 64
LOOP_GOAL, EXPONENT_GOAL = 50.0, 1.1


def _sizes(smoke):
    if smoke:
        return dict(lengths=[64, 128, 256], window=8, loop_length=32, loop_window=4,
                    loop_repeats=1)
    return dict(lengths=[1024, 2048, 4096, 8192, 16384, 32768], window=64, loop_length=512,
                loop_window=16, loop_repeats=5)


def loop_attention(tf, query, key, value, window):
    """The per-position reference: one small softmax per query position, in Python."""
    length = query.shape[1]
    scale = 1.0 / math.sqrt(query.shape[-1])
    outputs = []
    for i in range(length):
        lo, hi = max(0, i - window), min(length, i + window + 1)
        scores = tf.einsum("bd,bjd->bj", query[:, i] * scale, key[:, lo:hi])
        weights = tf.nn.softmax(scores, axis=-1)
        outputs.append(tf.einsum("bj,bjd->bd", weights, value[:, lo:hi]))
    return tf.stack(outputs, axis=1)


def _fit_exponent(lengths, times):
    """Least-squares slope of log(time) against log(L)."""
    xs = [math.log(x) for x in lengths]
    ys = [math.log(t) for t in times]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def main(argv=None):
    args = _harness.parse_args(__doc__.splitlines()[0], argv=argv)
    tf = _harness.configure_threads(args.threads)
    from attnlab.ops.local import local_attention

    sizes = _sizes(args.smoke)
    window = sizes["window"]
    _harness.print_header("local_scaling (target 3): B=%d d=%d" % (BATCH, DEPTH), args)

    def forward_backward(q, k, v, upstream):
        with tf.GradientTape() as tape:
            tape.watch([q, k, v])
            loss = tf.reduce_sum(local_attention(q, k, v, window=window) * upstream)
        return tape.gradient(loss, [q, k, v])

    step = tf.function(forward_backward)
    rows, medians = [], []
    for length in sizes["lengths"]:
        inputs = [tf.random.normal([BATCH, length, DEPTH], seed=i) for i in range(4)]
        timing = _harness.Timing(_harness.time_ms(lambda inputs=inputs: step(*inputs),
                                                  args.warmup, args.repeats))
        medians.append(timing.median)
        rows.append(["L=%d" % length, timing, "%.2f" % (timing.median / length * 1024),
                     "%.2fx" % (timing.median / medians[0]),
                     "%.0fx" % (length / sizes["lengths"][0])])
    exponent = _fit_exponent(sizes["lengths"], medians)
    _harness.table("Forward + backward, window %d (ms, median (min-max) of %d)"
                   % (window, args.repeats),
                   ["case", "local_attention", "ms per 1k positions", "time / first",
                    "L / first"], rows)
    print("\nFitted exponent of time ~ L^k over L = %d..%d: k = %.2f"
          % (sizes["lengths"][0], sizes["lengths"][-1], exponent))

    length, loop_window = sizes["loop_length"], sizes["loop_window"]
    q, k, v = (tf.random.normal([BATCH, length, DEPTH], seed=10 + i) for i in range(3))
    forward = tf.function(lambda q, k, v: local_attention(q, k, v, window=loop_window))
    reference = loop_attention(tf, q, k, v, loop_window)
    error = float(tf.reduce_max(tf.abs(forward(q, k, v) - reference)))
    if error > 1e-4:
        raise AssertionError("local_attention differs from the loop by %g" % error)
    ours = _harness.Timing(_harness.time_ms(lambda: forward(q, k, v), args.warmup,
                                            args.repeats))
    loop = _harness.Timing(_harness.time_ms(lambda: loop_attention(tf, q, k, v, loop_window),
                                            1, sizes["loop_repeats"]))
    speedup = loop.median / ours.median
    _harness.table("Forward at B=%d L=%d window %d (ms, median (min-max)); max |difference| "
                   "%.1e" % (BATCH, length, loop_window, error),
                   ["case", "local_attention", "per-position loop", "speed-up"],
                   [["L=%d w=%d" % (length, loop_window), ours, loop, "%.0fx" % speedup]])
    print()
    _harness.summary("3 local linear in L (w=%d)" % window, "exponent %.2f" % exponent,
                     "<= %.1f" % EXPONENT_GOAL, exponent <= EXPONENT_GOAL)
    _harness.summary("3 local vs loop L=%d w=%d" % (length, loop_window),
                     "%.0fx faster" % speedup, ">= %.0fx" % LOOP_GOAL, speedup >= LOOP_GOAL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
