"""Target 1: MultiHeadAttention forward + backward against tf.keras and the matmul ceiling.

Both layers get the same weights and the same self-attention input (B, L, D); one step
is the forward pass plus the gradients of sum(output * upstream) with respect to the
input and every weight, inside a tf.function (optionally jit_compile=True for both sides,
reported separately). The two sides are timed interleaved, one call each in turn, so a
change in machine load hits both. The ceiling is tf.matmul 2048^3, timed in the same
rounds; after it each layer makes one untimed call, so neither layer is timed on the caches
the ceiling has just evicted, and each is timed right after the other's call.
The process CPU time of each call is printed too: on a machine shared with other work it
gives the ratio and the fraction of the ceiling (per CPU-second) that wall time cannot.

FLOPs of one step: forward 8 B L D^2 (four projections) + 4 B L^2 D (q k^T and weights v),
backward twice the forward.

Usage:
    python benchmarks/mha_speed.py             # B=4 D=256 H=8, L = 128, 512, 2048
    python benchmarks/mha_speed.py --no-xla    # skip the jit_compile variant
    python benchmarks/mha_speed.py --smoke     # tiny sizes, proves it still runs
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness  # noqa: E402  (sets up sys.path and the TF log level)

SPEED_GOAL, CEILING_GOAL = 0.8, 0.5


def _add_arguments(parser):
    parser.add_argument("--no-xla", action="store_true", help="skip the jit_compile rows")
    parser.add_argument("--lengths", default=None, help="comma-separated L values")


def _sizes(args):
    if args.smoke:
        sizes = dict(batch=1, depth=16, heads=2, lengths=[16, 32], ceiling=256, main=16)
    else:
        sizes = dict(batch=4, depth=256, heads=8, lengths=[128, 512, 2048], ceiling=2048,
                     main=512)
    if args.lengths:
        sizes["lengths"] = [int(x) for x in args.lengths.split(",")]
        sizes["main"] = sizes["lengths"][0] if sizes["main"] not in sizes["lengths"] \
            else sizes["main"]
    return sizes


def step_flops(batch, length, depth):
    forward = 8 * batch * length * depth ** 2 + 4 * batch * length ** 2 * depth
    return 3 * forward


def make_step(tf, layer, jit):
    @tf.function(jit_compile=jit)
    def step(x, upstream):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, x) * upstream)
        return tape.gradient(loss, [x] + layer.trainable_variables)

    return step


def make_layers(tf, batch, length, depth, heads):
    from attnlab.layers.multi_head_attention import MultiHeadAttention

    x = tf.random.normal([batch, length, depth], seed=1)
    upstream = tf.random.normal([batch, length, depth], seed=2)
    keras = tf.keras.layers.MultiHeadAttention(num_heads=heads, key_dim=depth // heads)
    ours = MultiHeadAttention(num_heads=heads, key_dim=depth // heads)
    keras(x, x)
    ours(x, x)
    ours.set_weights(keras.get_weights())
    return x, upstream, {"attnlab": ours, "keras": keras}


def measure(tf, args, sizes, length, jit, ceiling_step):
    x, upstream, layers = make_layers(tf, sizes["batch"], length, sizes["depth"],
                                      sizes["heads"])
    steps = {name: make_step(tf, layer, jit) for name, layer in layers.items()}
    # The ceiling's matmul takes its turn in every round too: under a changing machine
    # load a ceiling measured once, earlier, would not be comparable.
    steps["ceiling"] = lambda x, upstream: ceiling_step()
    times = {name: [] for name in steps}
    cpu_times = {name: [] for name in steps}
    for step in steps.values():
        _harness.time_ms(lambda step=step: step(x, upstream), args.warmup, 0)
    def timed(name):
        start = time.process_time()
        times[name] += _harness.time_ms(lambda: steps[name](x, upstream), 0, 1)
        cpu_times[name].append((time.process_time() - start) * 1e3)

    for repeat in range(args.repeats):
        # The ceiling's 2048^3 matmul evicts the caches: in a fixed order the layer right
        # after it paid ~1 ms more at L=128 (about 10% of a step), always the same one. So
        # after the ceiling each layer makes one untimed call, then each is timed right
        # after the other one's call (never after its own), taking turns going first.
        order = list(layers) if repeat % 2 == 0 else list(layers)[::-1]
        timed("ceiling")
        for name in order:
            _harness.fetch(steps[name](x, upstream))
        for name in order:
            timed(name)
    return ({name: _harness.Timing(t) for name, t in times.items()},
            {name: _harness.Timing(t) for name, t in cpu_times.items()})


def main(argv=None):
    args = _harness.parse_args(__doc__.splitlines()[0], _add_arguments, argv)
    tf = _harness.configure_threads(args.threads)
    sizes = _sizes(args)
    _harness.print_header("mha_speed (target 1): B=%d D=%d H=%d, forward + backward"
                          % (sizes["batch"], sizes["depth"], sizes["heads"]), args)
    n = sizes["ceiling"]
    a, b = tf.random.normal([n, n]), tf.random.normal([n, n])
    ceiling_step = tf.function(lambda: tf.matmul(a, b))

    rows, results, cpu_lines = [], {}, []
    for jit in ([False] if args.no_xla else [False, True]):
        for length in sizes["lengths"]:
            timing, cpu = measure(tf, args, sizes, length, jit, ceiling_step)
            gflops = 2.0 * n ** 3 / (timing.pop("ceiling").median * 1e-3) / 1e9
            flops = step_flops(sizes["batch"], length, sizes["depth"])
            # Process CPU time (all threads) is robust to other load on the machine where
            # wall time is not: the same ratio and ceiling fraction per CPU-second.
            cpu_rate = 2.0 * n ** 3 / cpu["ceiling"].median
            cpu_lines.append(
                "L=%d%s: attnlab %.1f ms, tf.keras %.1f ms, ceiling %.1f ms -> %.2fx keras, "
                "%.0f%% of ceiling (keras %.0f%%)" % (
                    length, " XLA" if jit else "", cpu["attnlab"].median,
                    cpu["keras"].median, cpu["ceiling"].median,
                    cpu["attnlab"].median / cpu["keras"].median,
                    100 * flops / cpu["attnlab"].median / cpu_rate,
                    100 * flops / cpu["keras"].median / cpu_rate))
            ours, keras = timing["attnlab"], timing["keras"]
            ratio = ours.median / keras.median
            fraction = {name: flops / (t.median * 1e-3) / 1e9 / gflops
                        for name, t in timing.items()}
            results[length, jit] = (ratio, fraction["attnlab"])
            rows.append(["L=%d%s" % (length, " XLA" if jit else ""), ours, keras,
                         "%.2fx" % ratio, "%.0f%%" % (100 * fraction["attnlab"]),
                         "%.0f%%" % (100 * fraction["keras"]), "%.2f" % (flops / 1e9),
                         "%.0f" % gflops])
    _harness.table("Forward + backward (ms, median (min-max) of %d, interleaved with the "
                   "ceiling tf.matmul %d^3)" % (args.repeats, n),
                   ["case", "attnlab", "tf.keras", "attnlab / keras", "attnlab of ceiling",
                    "keras of ceiling", "step GFLOP", "ceiling GFLOP/s"], rows)
    print()
    print("Process CPU time per step (median of %d; all threads):" % args.repeats)
    for line in cpu_lines:
        print("  " + line)
    print()
    for (length, jit), (ratio, fraction) in sorted(results.items()):
        label = "1 MHA L=%d%s" % (length, " XLA" if jit else "")
        _harness.summary(label, "%.2fx keras, %.0f%% of ceiling" % (ratio, 100 * fraction),
                         "<= %.1fx keras, >= %.0f%%" % (SPEED_GOAL, 100 * CEILING_GOAL),
                         ratio <= SPEED_GOAL and fraction >= CEILING_GOAL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
