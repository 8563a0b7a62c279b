"""What an additive (B, 1, 1, S) score bias costs the attention kernels, in time and memory.

Part 1 times forward + backward (the bias's gradient included) of the layers' default full
kernel at L=512 and of the chunked kernel at L=2048, with and without a per-key bias, the
two sides taking turns. Part 2 measures the memory of a chunked forward + backward at
L=8192 with and without the bias, each in a fresh process (the bias must be sliced per
block, never expanded to (T, S)), two ways: the peak bytes of live tensors counted by
TensorFlow's own CPU allocator (TF_CPU_ALLOCATOR_USE_BFC=true, as chunked_memory.py), which
is what the goal is about, and the growth of the process's peak RSS under the default
allocator, which adds what the C library's heap keeps around.

Usage:
    python benchmarks/bias_overhead.py           # the cases above
    python benchmarks/bias_overhead.py --smoke   # tiny sizes, proves it still runs
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness  # noqa: E402  (sets up sys.path and the TF log level)

BATCH, HEADS, DEPTH = 1, 8, 64
TIME_GOAL, MEMORY_GOAL = 1.1, 1.05


def _sizes(smoke):
    if smoke:
        return dict(full_length=64, chunked_length=128, memory_length=256, chunk=32)
    return dict(full_length=512, chunked_length=2048, memory_length=8192, chunk=512)


def _add_arguments(parser):
    parser.add_argument("--case", help="internal: one memory case, 'with' or 'without' "
                                       "the bias, printed as JSON")
    parser.add_argument("--measure", choices=("live", "rss"), default="rss",
                        help="internal: what the memory case measures")


def make_step(tf, kernel, with_bias):
    """tf.function: attention forward + gradients of sum(out * upstream) by q, k, v (and
    the bias)."""
    def step(q, k, v, upstream, bias):
        watched = [q, k, v] + ([bias] if with_bias else [])
        with tf.GradientTape() as tape:
            tape.watch(watched)
            out = kernel(q, k, v, bias=bias if with_bias else None)
            loss = tf.reduce_sum(out * upstream)
        return tape.gradient(loss, watched)

    return tf.function(step)


def _inputs(tf, length):
    shape = [BATCH, HEADS, length, DEPTH]
    q, k, v, upstream = (tf.random.normal(shape, seed=i) for i in range(4))
    bias = tf.random.normal([BATCH, 1, 1, length], seed=9)
    return q, k, v, upstream, bias


def time_pair(tf, kernel, length, args):
    """(without, with) Timing of one kernel, one call of each side in turn."""
    inputs = _inputs(tf, length)
    steps = [make_step(tf, kernel, with_bias) for with_bias in (False, True)]
    times = ([], [])
    for _ in range(args.warmup):
        for step in steps:
            _harness.fetch(step(*inputs))
    for _ in range(args.repeats):
        for side, step in enumerate(steps):
            times[side].extend(_harness.time_ms(lambda step=step: step(*inputs), 0, 1))
    return tuple(_harness.Timing(t) for t in times)


def memory_case(args):
    """Peak growth (MiB) over one chunked forward + backward, in this process: of live
    tensors by TF's allocator (`--measure live`, None where TF does not count CPU
    allocations) or of the process's RSS (`--measure rss`)."""
    tf = _harness.configure_threads(args.threads)
    from attnlab.ops.kernels import attention_kernel

    sizes = _sizes(args.smoke)
    kernel = attention_kernel("chunked", chunk_size=sizes["chunk"])
    step = make_step(tf, kernel, args.case == "with")
    inputs = _inputs(tf, sizes["memory_length"])
    step.get_concrete_function(*inputs)  # tracing is not what is measured
    _harness.fetch(inputs)
    if args.measure == "live":
        try:
            before = tf.config.experimental.get_memory_info("CPU:0")["current"]
            tf.config.experimental.reset_memory_stats("CPU:0")
        except ValueError:  # CPU allocations not counted by this TensorFlow
            print(json.dumps({"peak_growth_mib": None}))
            return
        _harness.fetch(step(*inputs))
        peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
        print(json.dumps({"peak_growth_mib": (peak - before) / 2.0 ** 20}))
        return
    _harness.reset_peak_rss()
    before = _harness.rss_mib()
    _harness.fetch(step(*inputs))
    print(json.dumps({"peak_growth_mib": _harness.peak_rss_mib() - before}))


def memory_pair(args, measure):
    """(without, with) peak growth in MiB, each case in a fresh process."""
    growth = {}
    env = dict(os.environ)
    if measure == "live":
        env["TF_CPU_ALLOCATOR_USE_BFC"] = "true"
    for case in ("without", "with"):
        flags = ["--case", case, "--measure", measure, "--threads", str(args.threads)] + (
            ["--smoke"] if args.smoke else [])
        output = subprocess.run([sys.executable, os.path.abspath(__file__)] + flags,
                                check=True, stdout=subprocess.PIPE, text=True,
                                env=env).stdout
        growth[case] = json.loads(output.strip().splitlines()[-1])["peak_growth_mib"]
    return growth["without"], growth["with"]


def main(argv=None):
    args = _harness.parse_args(__doc__.splitlines()[0], _add_arguments, argv)
    if args.case:
        memory_case(args)
        return
    tf = _harness.configure_threads(args.threads)
    from attnlab.ops.kernels import attention_kernel, default_attention_impl

    sizes = _sizes(args.smoke)
    _harness.print_header("bias_overhead: B=%d H=%d d=%d, a (B, 1, 1, S) bias"
                          % (BATCH, HEADS, DEPTH), args)
    rows = []
    cases = [(default_attention_impl(), sizes["full_length"], {}),
             ("chunked", sizes["chunked_length"], {"chunk_size": sizes["chunk"]})]
    for name, length, options in cases:
        without, with_bias = time_pair(tf, attention_kernel(name, **options), length, args)
        ratio = with_bias.median / without.median
        rows.append(["%s L=%d" % (name, length), without, with_bias, "%.3fx" % ratio])
        _harness.summary("bias time %s L=%d" % (name, length), "%.3fx" % ratio,
                         "<= %.1fx" % TIME_GOAL, ratio <= TIME_GOAL)
    _harness.table("Forward + backward (ms, median (min-max) of %d, sides in turn)"
                   % args.repeats, ["case", "without bias", "with bias", "with / without"],
                   rows)
    rows, live_ratio = [], None
    for measure, label in (("live", "live tensors (TF allocator)"),
                           ("rss", "process RSS (default allocator)")):
        without, with_bias = memory_pair(args, measure)
        if without is None or with_bias is None:
            rows.append([label, "not counted", "not counted", "-"])
            continue
        ratio = with_bias / max(without, 1e-9)
        live_ratio = ratio if measure == "live" else live_ratio
        rows.append([label, "%.1f" % without, "%.1f" % with_bias, "%.3fx" % ratio])
    _harness.table("Peak growth over one chunked forward + backward, L=%d (MiB, fresh "
                   "processes)" % sizes["memory_length"],
                   ["measure", "without bias", "with bias", "with / without"], rows)
    if live_ratio is not None:
        _harness.summary("bias memory chunked L=%d (live tensors)" % sizes["memory_length"],
                         "%.3fx" % live_ratio, "<= %.2fx" % MEMORY_GOAL,
                         live_ratio <= MEMORY_GOAL)


if __name__ == "__main__":
    main()
