"""Shared benchmark plumbing: thread setup, timing, the matmul ceiling, tables, peak memory.

Every benchmark script imports this module before TensorFlow so that the thread settings
apply, measures its reference in the same run, and prints Markdown tables of ratios.
"""
import argparse
import os
import statistics
import sys
import time

# Quiet TensorFlow's start-up logging; must be set before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Run from a checkout without installing: `python benchmarks/x.py` finds attnlab.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


def parse_args(description, add_arguments=None, argv=None):
    """Common flags: --smoke (tiny sizes, one repeat), --repeats, --warmup, --threads."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes and one repeat: proves the script runs, times mean "
                             "nothing")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed iterations per case (median reported)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed iterations before timing (tracing, allocator warm-up)")
    parser.add_argument("--threads", type=int, default=2,
                        help="TensorFlow intra-op threads (inter-op is 1)")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.smoke else 15
    if args.warmup is None:
        args.warmup = 1 if args.smoke else 3
    return args


def configure_threads(threads):
    """Pin TensorFlow to `threads` intra-op threads and one inter-op thread.

    One inter-op thread: on a 2-core machine running independent ops concurrently only
    oversubscribes the cores each op already uses.
    """
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    return tf


def fetch(result):
    """Force the computation: pull one element of every output to the host."""
    import tensorflow as tf

    for x in tf.nest.flatten(result):
        if x is not None:
            x.numpy()


def time_ms(fn, warmup, repeats):
    """Wall-clock milliseconds of `repeats` calls of `fn` after `warmup` untimed calls."""
    for _ in range(warmup):
        fetch(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fetch(fn())
        times.append((time.perf_counter() - start) * 1e3)
    return times


class Timing:
    """Median and spread (min, max) of a list of times in ms."""

    def __init__(self, times):
        self.times = list(times)
        self.median = statistics.median(self.times)
        self.low = min(self.times)
        self.high = max(self.times)

    def __str__(self):
        if len(self.times) == 1:
            return "%.1f" % self.median
        return "%.1f (%.1f-%.1f)" % (self.median, self.low, self.high)


def matmul_ceiling(n, warmup, repeats):
    """GFLOP/s of a float32 tf.matmul n x n x n in a tf.function: the compute ceiling."""
    import tensorflow as tf

    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    step = tf.function(lambda: tf.matmul(a, b))
    timing = Timing(time_ms(step, warmup, repeats))
    return 2.0 * n ** 3 / (timing.median * 1e-3) / 1e9, timing


def table(title, columns, rows):
    """Print a Markdown table (the format RESULTS.md quotes) and return its text."""
    lines = ["", "### " + title, "",
             "| " + " | ".join(columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def summary(target, measured, goal, met):
    """One summary line that benchmarks/run_all collects: `SUMMARY | target | ... |`."""
    status = "met" if met else "NOT met"
    print("SUMMARY | %s | %s | %s | %s |" % (target, measured, goal, status), flush=True)


def load_line():
    """The 1/5/15-minute load averages, to judge how busy the machine was."""
    try:
        return "load average %.2f %.2f %.2f on %d cores" % (os.getloadavg() + (os.cpu_count(),))
    except OSError:
        return "load average unknown"


def print_header(name, args):
    import platform

    import tensorflow as tf

    print("# %s" % name)
    print("TensorFlow %s, Python %s, %d intra-op threads, warm-up %d, repeats %d%s; %s"
          % (tf.__version__, platform.python_version(), args.threads, args.warmup,
             args.repeats, ", SMOKE sizes" if args.smoke else "", load_line()), flush=True)
    from attnlab.ops.kernels import default_attention_impl, default_normalization

    # The layers' default kernel depends on the TensorFlow version (its CPU softmax).
    print("default attention kernel: %s, normalized by %s (attnlab.ops.kernels)"
          % (default_attention_impl(), default_normalization()), flush=True)


# --- memory ------------------------------------------------------------------------------

def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError("%s not in /proc/self/status" % field)


def rss_mib():
    """Current resident set size of this process (MiB)."""
    return _status_kib("VmRSS") / 1024.0


def peak_rss_mib():
    """Peak resident set size (VmHWM) of this process so far (MiB)."""
    return _status_kib("VmHWM") / 1024.0


def reset_peak_rss():
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
