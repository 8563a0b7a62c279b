"""Training step time and parameters of a top-1 MixtureOfExperts against a dense FFN.

The dense reference is one feed-forward network of the experts' size (D -> H -> D), the
per-token compute of a top-1 mixture; the mixture has 8 experts with capacity factor 1.25
(Switch's training value), in both dispatch modes. A step is forward, backward (the
auxiliary loss included) and an SGD update, in one tf.function; the cases take turns.

Usage:
    python benchmarks/moe_speed.py           # B=8 T=128 D=128 H=512
    python benchmarks/moe_speed.py --smoke   # tiny sizes, proves it still runs
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness  # noqa: E402  (sets up sys.path and the TF log level)

EXPERTS, CAPACITY_FACTOR = 8, 1.25
TIME_GOAL, PARAMS_LOW, PARAMS_HIGH = 1.5, 7.5, 8.5


def _sizes(smoke):
    if smoke:
        return dict(batch=2, length=16, depth=16, hidden=32)
    return dict(batch=8, length=128, depth=128, hidden=512)


def dense_ffn(tf, sizes):
    inputs = tf.keras.Input((None, sizes["depth"]))
    hidden = tf.keras.layers.Dense(sizes["hidden"], activation="relu")(inputs)
    return tf.keras.Model(inputs, tf.keras.layers.Dense(sizes["depth"])(hidden))


def mixture(tf, sizes, dispatch):
    from attnlab.layers import MixtureOfExperts

    inputs = tf.keras.Input((None, sizes["depth"]))
    layer = MixtureOfExperts(EXPERTS, sizes["hidden"], top_k=1,
                             capacity_factor=CAPACITY_FACTOR, dispatch=dispatch)
    return tf.keras.Model(inputs, layer(inputs))


def make_step(tf, model):
    """tf.function: MSE + the model's auxiliary losses, gradients, one SGD update."""
    optimizer = tf.keras.optimizers.SGD(0.01)

    def step(x, target):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - target))
            if model.losses:
                loss += tf.add_n(model.losses)
        grads = tape.gradient(loss, model.trainable_weights)
        optimizer.apply_gradients(zip(grads, model.trainable_weights))
        return loss

    return tf.function(step)


def main(argv=None):
    args = _harness.parse_args(__doc__.splitlines()[0], argv=argv)
    tf = _harness.configure_threads(args.threads)
    sizes = _sizes(args.smoke)
    _harness.print_header("moe_speed: B=%(batch)d T=%(length)d D=%(depth)d H=%(hidden)d, "
                          % sizes + "top-1 of %d experts, capacity factor %g"
                          % (EXPERTS, CAPACITY_FACTOR), args)
    tf.random.set_seed(0)
    shape = [sizes["batch"], sizes["length"], sizes["depth"]]
    x, target = tf.random.normal(shape, seed=1), tf.random.normal(shape, seed=2)
    cases = [("dense FFN", dense_ffn(tf, sizes)),
             ("MoE gather", mixture(tf, sizes, "gather")),
             ("MoE buffer", mixture(tf, sizes, "buffer"))]
    steps = [make_step(tf, model) for _, model in cases]
    for _ in range(args.warmup):
        for step in steps:
            _harness.fetch(step(x, target))
    times = [[] for _ in cases]
    for _ in range(args.repeats):
        for i, step in enumerate(steps):
            times[i].extend(_harness.time_ms(lambda step=step: step(x, target), 0, 1))
    timings = [_harness.Timing(t) for t in times]
    params = [model.count_params() for _, model in cases]
    rows = []
    for (name, _), timing, count in zip(cases, timings, params):
        rows.append([name, timing, "%.2fx" % (timing.median / timings[0].median), count,
                     "%.2fx" % (count / params[0])])
    _harness.table("Training step (ms, median (min-max) of %d, cases in turn) and parameters"
                   % args.repeats, ["case", "step ms", "time / dense", "parameters",
                                    "parameters / dense"], rows)
    for i in (1, 2):
        ratio = timings[i].median / timings[0].median
        _harness.summary("%s top-1 E=%d step time vs dense" % (cases[i][0], EXPERTS),
                         "%.2fx" % ratio, "<= %.1fx" % TIME_GOAL, ratio <= TIME_GOAL)
    ratio = params[1] / params[0]
    _harness.summary("MoE E=%d parameters vs dense" % EXPERTS, "%.2fx" % ratio,
                     "%.1f-%.1fx" % (PARAMS_LOW, PARAMS_HIGH),
                     PARAMS_LOW <= ratio <= PARAMS_HIGH)


if __name__ == "__main__":
    main()
