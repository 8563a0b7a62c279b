"""Target 2: chunked attention forward + backward in O(L x chunk) memory.

Each memory case runs in fresh Python processes (3 by default, the median is reported: the
peak varies by one or two tensors with the order in which the executor happens to run
independent ops): TensorFlow imported, inputs allocated,
then the baseline RSS is taken (and the peak RSS reset to it); the case's peak RSS
(VmHWM) above that baseline is reported, tracing of the tf.function included. Full
attention at L=32768 would need more than 24 GiB and is not run: its memory is computed
from the per-score-element factor measured on full attention at the largest length run.
Time at L=2048 is measured in one further process, full and chunked interleaved (and, for
reference, full attention through TensorFlow's generic softmax gradient); the target is
judged on that figure. It is then measured with each implementation alone in its own
process, processes alternating, which shows whether interleaving biases the ratio (every
chunked step runs right after a full step has allocated and freed its (B, H, L, L)
tensors, which is not how either runs in a model).
Peak RSS counts what the C allocator keeps, which varies by process; a last table gives the
peak of live tensor bytes instead, as TensorFlow's own allocator counts them (one process
per case, run with its BFC allocator for the CPU, `TF_CPU_ALLOCATOR_USE_BFC=true`).

Usage:
    python benchmarks/chunked_memory.py            # the issue's cases (several minutes)
    python benchmarks/chunked_memory.py --smoke    # tiny sizes, proves it still runs
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness  # noqa: E402  (sets up sys.path and the TF log level)

BATCH, HEADS, DEPTH = 1, 8, 64
MEMORY_GOAL, TIME_GOAL, BIG_GOAL_MIB = 32.0, 1.3, 2048.0


def _add_arguments(parser):
    parser.add_argument("--case", help="internal: run one case (IMPL:LENGTH, time:LENGTH, "
                                       "time:LENGTH:IMPL or live:LENGTH:IMPL) in this process")
    parser.add_argument("--alone-runs", type=int, default=3,
                        help="fresh processes per implementation for the time measured "
                             "alone (the median over processes is reported)")
    parser.add_argument("--memory-runs", type=int, default=3,
                        help="fresh processes per memory case; the median peak is reported "
                             "(the peak depends on the executor's op order, which varies)")
    parser.add_argument("--chunk", type=int, default=None,
                        help="query and key chunk size of chunked_attention (default %d)"
                             % _sizes(False)["chunk"])


def _sizes(smoke):
    if smoke:
        return dict(memory=[("full", 256), ("chunked", 256), ("chunked", 512)],
                    ratio_length=256, big_length=512, time_length=128, chunk=64)
    return dict(memory=[("full", 2048), ("chunked", 2048), ("full", 8192), ("chunked", 8192),
                        ("chunked", 32768)],
                ratio_length=8192, big_length=32768, time_length=2048, chunk=512)


def make_step(tf, impl, chunk):
    """tf.function computing attention and the gradients of sum(out * upstream)."""
    from attnlab.ops.chunked import chunked_attention
    from attnlab.ops.full import full_attention
    from attnlab.ops.kernels import default_normalization
    from attnlab.ops.scaled_dot_product import scaled_dot_product_attention

    normalization = default_normalization()  # the layers' default (printed in the header)

    def attend(q, k, v):
        if impl == "full":
            return full_attention(q, k, v, normalization=normalization)
        if impl == "autodiff":
            # The plain reference: TensorFlow's autodiff of softmax(q k^T) v, the textbook
            # full attention.
            return scaled_dot_product_attention(q, k, v)
        return chunked_attention(q, k, v, query_chunk_size=chunk, key_chunk_size=chunk,
                                 normalization=normalization)

    @tf.function
    def step(q, k, v, upstream):
        with tf.GradientTape() as tape:
            tape.watch([q, k, v])
            loss = tf.reduce_sum(attend(q, k, v) * upstream)
        return tape.gradient(loss, [q, k, v])

    return step


def make_inputs(tf, length):
    shape = [BATCH, HEADS, length, DEPTH]
    return [tf.random.normal(shape, seed=i) for i in range(4)]


def run_memory_case(args, impl, length):
    """In this (fresh) process: peak RSS above the baseline of one forward + backward."""
    tf = _harness.configure_threads(args.threads)
    import time

    inputs = make_inputs(tf, length)
    _harness.fetch(inputs)
    baseline = _harness.rss_mib()
    reset = _harness.reset_peak_rss()
    start = time.perf_counter()
    step = make_step(tf, impl, args.chunk)
    _harness.fetch(step(*inputs))
    seconds = time.perf_counter() - start
    peak = _harness.peak_rss_mib()
    # A second call, peak reset again: the steady state without tracing and graph
    # optimization (still above the same baseline).
    _harness.reset_peak_rss()
    _harness.fetch(step(*inputs))
    steady = _harness.peak_rss_mib()
    print("RESULT " + json.dumps(dict(impl=impl, length=length, baseline_mib=baseline,
                                      peak_above_mib=peak - baseline,
                                      steady_above_mib=steady - baseline, seconds=seconds,
                                      peak_reset=reset)), flush=True)


def run_live_case(args, impl, length):
    """In this process: peak bytes of live tensors above the inputs, by TF's allocator.

    Needs TF_CPU_ALLOCATOR_USE_BFC=true in the environment; a TensorFlow that does not
    count CPU allocations reports None.
    """
    tf = _harness.configure_threads(args.threads)
    inputs = make_inputs(tf, length)
    _harness.fetch(inputs)
    try:
        before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    except ValueError:  # CPU allocations not counted by this TensorFlow
        before = None
    if before is not None:
        tf.config.experimental.reset_memory_stats("CPU:0")
    _harness.fetch(make_step(tf, impl, args.chunk)(*inputs))
    live = None
    if before is not None:
        live = (tf.config.experimental.get_memory_info("CPU:0")["peak"] - before) / 2.0 ** 20
    print("RESULT " + json.dumps(dict(impl=impl, length=length, live_above_mib=live)),
          flush=True)


def run_time_case(args, length, impls):
    """In this process: forward + backward of each of `impls` timed, interleaved."""
    tf = _harness.configure_threads(args.threads)
    inputs = make_inputs(tf, length)
    steps = {impl: make_step(tf, impl, args.chunk) for impl in impls}
    times = {impl: [] for impl in steps}
    for step in steps.values():
        _harness.time_ms(lambda step=step: step(*inputs), args.warmup, 0)
    for _ in range(args.repeats):  # alternate so both see the same machine load
        for impl, step in steps.items():
            times[impl] += _harness.time_ms(lambda step=step: step(*inputs), 0, 1)
    print("RESULT " + json.dumps(times), flush=True)


def _child(args, case, env=None):
    command = [sys.executable, os.path.abspath(__file__), "--case", case,
               "--threads", str(args.threads), "--repeats", str(args.repeats),
               "--warmup", str(args.warmup), "--chunk", str(args.chunk)]
    proc = subprocess.run(command, capture_output=True, text=True,
                          env=None if env is None else dict(os.environ, **env))
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError("case %s failed (exit %d):\n%s" % (case, proc.returncode,
                                                          proc.stderr[-3000:]))


def main(argv=None):
    args = _harness.parse_args(__doc__.splitlines()[0], _add_arguments, argv)
    sizes = _sizes(args.smoke)
    if args.chunk is None:
        args.chunk = sizes["chunk"]
    if args.case:
        kind, length, *impls = args.case.split(":")
        if kind == "time":  # time:LENGTH times all three, time:LENGTH:IMPL one alone
            return run_time_case(args, int(length), impls or ["full", "chunked", "autodiff"])
        if kind == "live":
            return run_live_case(args, impls[0], int(length))
        return run_memory_case(args, kind, int(length))

    tf = _harness.configure_threads(args.threads)
    _harness.print_header("chunked_memory (target 2): B=%d H=%d dk=%d, chunk %d, forward + "
                          "backward" % (BATCH, HEADS, DEPTH, args.chunk), args)
    del tf  # the parent only orchestrates; every measurement is in a child process

    results = {}
    for impl, length in sizes["memory"]:
        runs = [_child(args, "%s:%d" % (impl, length))
                for _ in range(1 if args.smoke else args.memory_runs)]
        runs.sort(key=lambda r: r["peak_above_mib"])
        results[impl, length] = dict(runs[len(runs) // 2],
                                     peaks=[r["peak_above_mib"] for r in runs])
    # Full attention's peak per (B, H, L, L) score tensor, measured at the longest full run.
    full_length = max(length for impl, length in results if impl == "full")
    score_mib = BATCH * HEADS * full_length ** 2 * 4 / 2.0 ** 20
    factor = results["full", full_length]["peak_above_mib"] / score_mib
    big = sizes["big_length"]
    big_full_mib = factor * BATCH * HEADS * big ** 2 * 4 / 2.0 ** 20

    rows = []
    for length in sorted({length for _, length in sizes["memory"]} | {big}):
        chunked = results.get(("chunked", length))
        full = results.get(("full", length))
        full_mib = full["peak_above_mib"] if full else big_full_mib
        full_cell = ("%.0f" % full_mib) if full else ("%.0f (computed, not run)" % full_mib)
        scores_mib = BATCH * HEADS * length ** 2 * 4 / 2.0 ** 20
        rows.append([
            "L=%d" % length,
            "%.0f" % chunked["peak_above_mib"] if chunked else "-",
            full_cell,
            "%.1fx" % (full_mib / chunked["peak_above_mib"]) if chunked else "-",
            "%.0f" % scores_mib,
            "%.1f / %s" % (chunked["seconds"], "%.1f" % full["seconds"] if full else "-")
            if chunked else "-",
        ])
    _harness.table("Peak RSS above baseline (MiB), fresh process per case",
                   ["case", "chunked", "full", "full / chunked", "one (B,H,L,L) fp32 tensor",
                    "first step s (chunked / full)"], rows)
    print("\nEach figure is the median of %d fresh processes; all peaks (MiB): %s" % (
        1 if args.smoke else args.memory_runs, "; ".join(
            "%s L=%d: %s" % (impl, length, " ".join("%.0f" % p for p in r["peaks"]))
            for (impl, length), r in sorted(results.items()))))
    baselines = ", ".join("%s L=%d: %.0f" % (impl, length, r["baseline_mib"])
                          for (impl, length), r in sorted(results.items()))
    print("\nBaselines (MiB, RSS after TF import and input allocation): " + baselines)
    print("Full attention's peak is %.2f x one (B,H,L,L) float32 tensor at L=%d; the L=%d "
          "figure is that factor times B*H*L^2*4 bytes." % (factor, full_length, big))
    if not all(r["peak_reset"] for r in results.values()):
        print("Note: /proc/self/clear_refs was not writable; peaks include the import peak.")

    timing = _child(args, "time:%d" % sizes["time_length"])
    full_t, chunked_t, autodiff_t = (_harness.Timing(timing[impl])
                                     for impl in ("full", "chunked", "autodiff"))
    time_ratio = chunked_t.median / full_t.median
    _harness.table("Forward + backward time at L=%d (ms, median (min-max) of %d, interleaved)"
                   % (sizes["time_length"], args.repeats),
                   ["case", "chunked", "full", "chunked / full", "full, autodiff softmax",
                    "chunked / autodiff full"],
                   [["L=%d" % sizes["time_length"], chunked_t, full_t, "%.2fx" % time_ratio,
                     autodiff_t, "%.2fx" % (chunked_t.median / autodiff_t.median)]])
    print("\n`full` is attnlab's full_attention kernel with its own gradient (the "
          "target's reference); `autodiff` the same op asked for its weights, which takes "
          "TensorFlow's generic softmax gradient.")

    runs = 1 if args.smoke else args.alone_runs
    alone = {"full": [], "chunked": []}
    for _ in range(runs):  # alternate the processes, as the steps above alternate
        for impl in alone:
            case = "time:%d:%s" % (sizes["time_length"], impl)
            alone[impl].append(_harness.Timing(_child(args, case)[impl]).median)
    full_alone, chunked_alone = (sorted(alone[impl])[runs // 2] for impl in ("full", "chunked"))
    _harness.table("Forward + backward time at L=%d, each implementation alone in its own "
                   "process (ms, median over %d processes of each one's median of %d)"
                   % (sizes["time_length"], runs, args.repeats),
                   ["case", "chunked", "full", "chunked / full", "all processes (chunked; full)"],
                   [["L=%d" % sizes["time_length"], "%.1f" % chunked_alone,
                     "%.1f" % full_alone, "%.2fx" % (chunked_alone / full_alone),
                     "%s; %s" % tuple(" ".join("%.1f" % t for t in alone[impl])
                                      for impl in ("chunked", "full"))]])

    live = {}
    for impl, length in sizes["memory"]:
        if length <= sizes["ratio_length"]:
            live[impl, length] = _child(args, "live:%d:%s" % (length, impl),
                                        env={"TF_CPU_ALLOCATOR_USE_BFC": "true"})
    rows = []
    for length in sorted(length for impl, length in live
                         if impl == "full" and ("chunked", length) in live):
        chunked, full = (live[impl, length]["live_above_mib"] for impl in ("chunked", "full"))
        counted = chunked is not None and full is not None
        rows.append(["L=%d" % length] + (
            ["%.0f" % chunked, "%.0f" % full, "%.1fx" % (full / chunked)] if counted
            else ["n/a", "n/a", "this TensorFlow does not count CPU allocations"]))
    _harness.table("Peak live tensor bytes above the inputs (MiB, TensorFlow's BFC CPU "
                   "allocator's count), one process per case",
                   ["case", "chunked", "full", "full / chunked"], rows)

    ratio_length = sizes["ratio_length"]
    memory_ratio = (results["full", ratio_length]["peak_above_mib"]
                    / results["chunked", ratio_length]["peak_above_mib"])
    big_mib = results["chunked", big]["peak_above_mib"]
    print()
    _harness.summary("2 chunked memory L=%d" % ratio_length, "%.1fx lower" % memory_ratio,
                     ">= %.0fx lower" % MEMORY_GOAL, memory_ratio >= MEMORY_GOAL)
    _harness.summary("2 chunked memory L=%d" % big, "%.0f MiB above baseline" % big_mib,
                     "<= %.0f MiB" % BIG_GOAL_MIB, big_mib <= BIG_GOAL_MIB)
    _harness.summary("2 chunked time L=%d" % sizes["time_length"], "%.2fx full" % time_ratio,
                     "<= %.1fx" % TIME_GOAL, time_ratio <= TIME_GOAL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
