"""Capturing attention with queries and keys (the query/key anatomy's data) against a plain
forward pass of a small attnlab Transformer encoder.

A token classifier (embedding, 4 TransformerEncoderBlocks with D=128, 4 heads, feed-forward
256; random weights: time does not depend on them) runs eagerly on a batch of 8 x 64 ids,
three ways, taking turns:
  forward                     model(batch): what a user runs anyway
  capture_attention           the same single pass, every layer's (B, H, T, T) weights
                              copied to NumPy as the explorer reads them
  capture_attention + q/k     with_qk=True: also every layer's queries and keys (B, H, T, dk),
                              scale and mask, in the same pass
Reported: median wall-clock and process CPU ms and their ratios to the forward pass; the
target is capture with q/k <= 1.3x the forward pass (wall clock).

Usage:
    python benchmarks/capture_qk_overhead.py           # B=8, T=64, 4 blocks of D=128
    python benchmarks/capture_qk_overhead.py --smoke   # tiny sizes, proves it still runs
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness  # noqa: E402  (sets up sys.path and the TF log level)

GOAL = 1.3


def build_model(tf, vocab, length, depth, heads, layers):
    from attnlab.layers.transformer_encoder import TransformerEncoderBlock

    ids = tf.keras.Input((length,), dtype=tf.int32)
    x = tf.keras.layers.Embedding(vocab, depth, name="embedding")(ids)
    for i in range(layers):
        x = TransformerEncoderBlock(heads, 2 * depth, name="block_%d" % i)(x)
    return tf.keras.Model(ids, tf.keras.layers.Dense(vocab, name="logits")(x))


def main(argv=None):
    args = _harness.parse_args(__doc__.splitlines()[0], None, argv)
    tf = _harness.configure_threads(args.threads)
    _harness.print_header("capture_qk_overhead", args)
    import numpy as np

    from attnlab.viz.capture import capture_attention

    sizes = dict(batch=2, length=16, depth=32, heads=4, layers=2) if args.smoke else \
        dict(batch=8, length=64, depth=128, heads=4, layers=4)
    tf.keras.utils.set_random_seed(0)
    vocab = 100
    model = build_model(tf, vocab, sizes["length"], sizes["depth"], sizes["heads"],
                        sizes["layers"])
    ids = np.random.default_rng(0).integers(1, vocab, size=(sizes["batch"], sizes["length"]))
    batch = tf.constant(ids, tf.int32)
    cases = [
        ("forward", lambda: model(batch, training=False)),
        ("capture_attention", lambda: capture_attention(model, batch)),
        ("capture_attention + q/k", lambda: capture_attention(model, batch, with_qk=True)),
    ]

    def run(fn):
        result = fn()
        if hasattr(result, "numpy"):
            result.numpy()  # the forward pass: force its computation; captures are NumPy

    for _ in range(args.warmup):
        for _, fn in cases:
            run(fn)
    times = {name: [] for name, _ in cases}
    cpu = {name: [] for name, _ in cases}
    for _ in range(args.repeats):  # one call of each case in turn: load changes hit all
        for name, fn in cases:
            start, start_cpu = time.perf_counter(), time.process_time()
            run(fn)
            times[name].append((time.perf_counter() - start) * 1e3)
            cpu[name].append((time.process_time() - start_cpu) * 1e3)
    timings = {name: _harness.Timing(t) for name, t in times.items()}
    cpu_timings = {name: _harness.Timing(t) for name, t in cpu.items()}
    base, cpu_base = timings["forward"].median, cpu_timings["forward"].median
    rows = [(name, str(timings[name]), "%.3f" % (timings[name].median / base),
             str(cpu_timings[name]), "%.3f" % (cpu_timings[name].median / cpu_base))
            for name, _ in cases]
    _harness.table("attnlab Transformer encoder D=%d, %d blocks, %d heads, batch %d x %d "
                   "tokens, eager" % (sizes["depth"], sizes["layers"], sizes["heads"],
                                      sizes["batch"], sizes["length"]),
                   ["case", "ms", "ratio to forward", "CPU ms", "CPU ratio to forward"], rows)
    ratio = timings["capture_attention + q/k"].median / base
    _harness.summary("capture with q/k vs forward (B=%d T=%d, %d blocks)"
                     % (sizes["batch"], sizes["length"], sizes["layers"]),
                     "%.2fx" % ratio, "<= %.1fx" % GOAL, ratio <= GOAL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
