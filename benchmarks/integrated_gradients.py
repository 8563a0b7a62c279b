"""Integrated Gradients (32 steps) on a 2-layer attnlab Transformer classifier at 128 tokens.

The classifier: Embedding (vocabulary 1000, D=128) + learned positions, two attnlab
TransformerEncoderBlocks (4 heads, feed-forward 512), mean over tokens, Dense(4); random
weights (time does not depend on them). Eager, taking turns, for a batch of 1 and of 8:
  forward             model(ids): the plain forward pass of the batch
  gradient x32        one forward + backward pass over 32 rows per example (the
                      interpolation points), in calls of 32 rows: the floor of any
                      32-step path method
  integrated_gradients  attnlab.viz.integrated_gradients (Gauss-Legendre, 32 points,
                      batch_size=32): the input pass, the baseline pass, the gradient rows,
                      the completeness check
Reported: median ms per call and per explanation (example), and the ratio to the forward
pass of the same batch. No target: the figures are reported.

Usage:
    python benchmarks/integrated_gradients.py           # T=128, D=128, B=1 and 8
    python benchmarks/integrated_gradients.py --smoke   # tiny sizes, proves it still runs
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness  # noqa: E402  (sets up sys.path and the TF log level)


def build_classifier(tf, vocab_size, length, depth, heads, ff_dim, classes, layers=2):
    """ids (B, T) -> embedding + positions -> attnlab encoder blocks -> mean -> logits."""
    from attnlab.layers.positional.learned import LearnedPositionEmbedding
    from attnlab.layers.transformer_encoder import TransformerEncoderBlock

    ids = tf.keras.Input((length,), dtype=tf.int32)
    x = tf.keras.layers.Embedding(vocab_size, depth, name="embedding")(ids)
    x = x + LearnedPositionEmbedding(length, name="positions")(x)
    for i in range(layers):
        x = TransformerEncoderBlock(heads, ff_dim, activation="gelu", name="block_%d" % i)(x)
    logits = tf.keras.layers.Dense(classes)(tf.keras.layers.GlobalAveragePooling1D()(x))
    return tf.keras.Model(ids, logits)


def main(argv=None):
    args = _harness.parse_args(__doc__.splitlines()[0], None, argv)
    tf = _harness.configure_threads(args.threads)
    _harness.print_header("integrated_gradients", args)
    import numpy as np

    from attnlab.viz.integrated_gradients import integrated_gradients

    sizes = dict(batches=(1, 2), length=16, depth=16, heads=2, ff_dim=32, steps=4) \
        if args.smoke else dict(batches=(1, 8), length=128, depth=128, heads=4, ff_dim=512,
                                steps=32)
    steps, rows_per_call = sizes["steps"], 32
    tf.keras.utils.set_random_seed(0)
    model = build_classifier(tf, 1000, sizes["length"], sizes["depth"], sizes["heads"],
                             sizes["ff_dim"], 4)
    rng = np.random.default_rng(0)
    cases = []
    for batch in sizes["batches"]:
        ids = tf.constant(rng.integers(1, 1000, size=(batch, sizes["length"])), tf.int32)
        path_ids = tf.repeat(ids, steps, axis=0)

        def gradient_rows(path_ids=path_ids):
            for start in range(0, int(path_ids.shape[0]), rows_per_call):
                chunk = path_ids[start:start + rows_per_call]
                with tf.GradientTape() as tape:
                    logits = model(chunk, training=False)
                    total = tf.reduce_sum(tf.reduce_max(logits, axis=-1))
                gradient = tape.gradient(total, model.trainable_variables[0])
                getattr(gradient, "values", gradient).numpy()

        def explain(ids=ids):
            return integrated_gradients(model, ids, steps=steps, batch_size=rows_per_call,
                                        completeness_tolerance=None)

        cases += [("B=%d forward" % batch, batch, lambda ids=ids: model(ids).numpy()),
                  ("B=%d gradient x%d" % (batch, steps), batch, gradient_rows),
                  ("B=%d integrated_gradients %d steps" % (batch, steps), batch, explain)]
    for _ in range(args.warmup):
        for _, _, fn in cases:
            fn()
    times = {name: [] for name, _, _ in cases}
    for _ in range(args.repeats):  # one call of each case in turn: load changes hit all
        for name, _, fn in cases:
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    timings = {name: _harness.Timing(t) for name, t in times.items()}
    rows = []
    for name, batch, _ in cases:
        base = timings["B=%d forward" % batch].median
        rows.append((name, str(timings[name]), "%.1f" % (timings[name].median / batch),
                     "%.1f" % (timings[name].median / base)))
    _harness.table("2-layer Transformer classifier D=%d, %d heads, T=%d, eager; IG %d steps"
                   % (sizes["depth"], sizes["heads"], sizes["length"], steps),
                   ["case", "ms", "ms per explanation", "ratio to forward"], rows)
    quality = explain(ids=tf.constant(rng.integers(1, 1000, size=(1, sizes["length"])),
                                      tf.int32))
    print("completeness of one explanation: attributions sum %.6g, f(x) - f(baseline) %.6g, "
          "relative error %.2g" % (quality.attribution_sums[0], quality.input_values[0] -
                                   quality.baseline_values[0], quality.relative_errors[0]))
    for batch in sizes["batches"]:
        ig = timings["B=%d integrated_gradients %d steps" % (batch, steps)].median
        base = timings["B=%d forward" % batch].median
        _harness.summary("IG %d steps, 2 layers, T=%d, B=%d" % (steps, sizes["length"], batch),
                         "%.0f ms per explanation, %.1fx forward" % (ig / batch, ig / base),
                         "report", True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
