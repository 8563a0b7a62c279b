"""Where a step's time goes: TensorFlow profiler op totals of two steps, side by side.

The op profiles quoted in RESULTS.md come from here. Target 1 compares attnlab's
MultiHeadAttention with tf.keras' (the steps of `mha_speed.py`, B=4 D=256 H=8); target 2
compares chunked attention with full attention (the steps of `chunked_memory.py`, B=1 H=8
dk=64, chunks of 512). Both steps are traced and warmed up, then profiled for --repeats
steps each, taking turns. The table gives each op type's time per step (summed over
its ops) and how many ops of that type a step runs. With one inter-op thread the ops run one
at a time, so their sum is close to the step's wall time; the rest is the executor's own
scheduling. Profiling slows small ops down a little: compare the two sides, not the
absolute times with the other scripts'.

Usage:
    python benchmarks/op_profile.py                            # target 1 at L=512, 2 at L=2048
    python benchmarks/op_profile.py --target 2 --length 8192   # one target, another length
    python benchmarks/op_profile.py --smoke                    # tiny sizes, proves it runs
"""
import collections
import glob
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness  # noqa: E402  (sets up sys.path and the TF log level)

DEFAULT_LENGTHS = {1: 512, 2: 2048}
SMOKE_LENGTHS = {1: 32, 2: 128}
SMALL_MS = 0.05  # op types under this on both sides share one row

# A kernel's event on an executor thread is named "op_name:OpType"; the executor's and the
# runtime's own events have spaces or "::" in their names.
_OP_EVENT = re.compile(r"^[^\s:]+:([A-Za-z_][A-Za-z0-9_]*)$")


def _add_arguments(parser):
    parser.add_argument("--target", type=int, choices=sorted(DEFAULT_LENGTHS), default=None,
                        help="profile only this target's two steps (default: both)")
    parser.add_argument("--length", type=int, default=None,
                        help="sequence length L (default: %s)" % ", ".join(
                            "%d for target %d" % (length, target)
                            for target, length in sorted(DEFAULT_LENGTHS.items())))


def _xplane_pb2():
    try:
        from tensorflow.tsl.profiler.protobuf import xplane_pb2  # TF >= 2.12
    except ImportError:
        from tensorflow.core.profiler.protobuf import xplane_pb2  # TF 2.9
    return xplane_pb2


def op_totals(logdir):
    """{op type: [total ms, number of ops]} over the host events of the profile in logdir."""
    paths = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    if len(paths) != 1:
        raise RuntimeError("expected one profile (*.xplane.pb) under %s, found %d"
                           % (logdir, len(paths)))
    space = _xplane_pb2().XSpace()
    with open(paths[0], "rb") as f:
        space.ParseFromString(f.read())
    totals = collections.defaultdict(lambda: [0.0, 0])
    for plane in space.planes:
        if not plane.name.startswith("/host:"):
            continue
        for line in plane.lines:
            for event in line.events:
                match = _OP_EVENT.match(plane.event_metadata[event.metadata_id].name)
                if match:
                    total = totals[match.group(1)]
                    total[0] += event.duration_ps / 1e9
                    total[1] += 1
    return totals


def profile_once(tf, step, inputs):
    """(wall ms, {op type: [ms, number of ops]}) of one profiled call of `step`."""
    with tempfile.TemporaryDirectory(prefix="op_profile_") as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        _harness.fetch(step(*inputs))
        wall = (time.perf_counter() - start) * 1e3
        tf.profiler.experimental.stop()
        totals = op_totals(logdir)
    if not totals:
        raise RuntimeError("the profile holds no op events: this TensorFlow names them "
                           "differently than `op_name:OpType`")
    return wall, totals


def profile_pair(tf, sides, args):
    """[(name, wall ms per step, {op type: (ms per step, ops per step)})] for both sides.

    The sides take turns, one profiled step each, the first going first in every other
    round, so that a change of machine speed during the run hits both alike.
    """
    for _ in range(args.warmup):
        for _, step, inputs in sides:
            _harness.fetch(step(*inputs))
    walls = [0.0] * len(sides)
    totals = [collections.defaultdict(lambda: [0.0, 0]) for _ in sides]
    for round_index in range(args.repeats):
        order = range(len(sides)) if round_index % 2 == 0 else reversed(range(len(sides)))
        for i in order:
            _, step, inputs = sides[i]
            wall, ops = profile_once(tf, step, inputs)
            walls[i] += wall
            for op, (ms, count) in ops.items():
                totals[i][op][0] += ms
                totals[i][op][1] += count
    return [(name, walls[i] / args.repeats,
             {op: (ms / args.repeats, count / args.repeats)
              for op, (ms, count) in totals[i].items()})
            for i, (name, _, _) in enumerate(sides)]


def target_steps(tf, target, length, smoke):
    """A target's two sides as [(name, step, inputs)]: the measured side, then its reference."""
    if target == 1:
        import mha_speed

        batch, depth, heads = (1, 16, 2) if smoke else (4, 256, 8)
        x, upstream, layers = mha_speed.make_layers(tf, batch, length, depth, heads)
        return [(name, mha_speed.make_step(tf, layers[name], False), (x, upstream))
                for name in ("attnlab", "keras")]
    import chunked_memory

    chunk = 64 if smoke else 512
    inputs = chunked_memory.make_inputs(tf, length)
    return [(impl, chunked_memory.make_step(tf, impl, chunk), inputs)
            for impl in ("chunked", "full")]


def comparison_rows(sides):
    """Table rows: op types by the larger side's time, then the totals and the wall time."""
    (_, wall_a, ops_a), (_, wall_b, ops_b) = sides
    names = sorted(set(ops_a) | set(ops_b),
                   key=lambda op: -max(ops_a.get(op, (0, 0))[0], ops_b.get(op, (0, 0))[0]))
    rows, small = [], [0.0, 0.0, 0, 0, 0]  # ms a, ms b, count a, count b, op types
    for op in names:
        ms_a, count_a = ops_a.get(op, (0.0, 0))
        ms_b, count_b = ops_b.get(op, (0.0, 0))
        if max(ms_a, ms_b) < SMALL_MS:
            for i, value in enumerate((ms_a, ms_b, count_a, count_b, 1)):
                small[i] += value
            continue
        rows.append([op, "%.2f" % ms_a, "%.2f" % ms_b, "%+.2f" % (ms_a - ms_b),
                     "%g" % count_a, "%g" % count_b])
    if small[4]:
        rows.append(["%d other op types (each under %g ms)" % (small[4], SMALL_MS),
                     "%.2f" % small[0], "%.2f" % small[1], "%+.2f" % (small[0] - small[1]),
                     "%g" % small[2], "%g" % small[3]])
    sum_a = sum(ms for ms, _ in ops_a.values())
    sum_b = sum(ms for ms, _ in ops_b.values())
    count_a = sum(count for _, count in ops_a.values())
    count_b = sum(count for _, count in ops_b.values())
    rows.append(["all ops", "%.2f" % sum_a, "%.2f" % sum_b, "%+.2f" % (sum_a - sum_b),
                 "%g" % count_a, "%g" % count_b])
    rows.append(["step, wall (profiled)", "%.2f" % wall_a, "%.2f" % wall_b,
                 "%+.2f" % (wall_a - wall_b), "-", "-"])
    return rows


def main(argv=None):
    args = _harness.parse_args(__doc__.splitlines()[0], _add_arguments, argv)
    if args.repeats < 1:
        raise SystemExit("--repeats must be at least 1, got %d" % args.repeats)
    if args.length is not None and args.length < 1:
        raise SystemExit("--length must be at least 1, got %d" % args.length)
    tf = _harness.configure_threads(args.threads)
    _harness.print_header("op_profile: TensorFlow profiler op totals per step", args)
    targets = [args.target] if args.target else sorted(DEFAULT_LENGTHS)
    for target in targets:
        length = args.length or (SMOKE_LENGTHS if args.smoke else DEFAULT_LENGTHS)[target]
        sides = profile_pair(tf, target_steps(tf, target, length, args.smoke), args)
        (name_a, _, _), (name_b, _, _) = sides
        _harness.table(
            "Target %d, L=%d: op time per step (ms), mean of %d profiled steps each"
            % (target, length, args.repeats),
            ["op", name_a, name_b, "%s - %s" % (name_a, name_b), "%s ops" % name_a,
             "%s ops" % name_b],
            comparison_rows(sides))
    return 0


if __name__ == "__main__":
    sys.exit(main())
