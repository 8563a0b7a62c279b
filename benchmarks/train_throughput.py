"""Training throughput: attnlab's custom loop (Trainer) against model.fit, with and without XLA.

Same model (TransformerSeq2Seq), same data (the reverse task, fixed batches), same optimizer
(Adam) and loss; both sides run one untimed epoch first (tracing), then timed epochs, one
of each side in turn (a change in machine load hits both). Reported: steps/s of each side
and the ratio custom loop / model.fit measured in the same run.

Usage:
    python benchmarks/train_throughput.py            # d_model 64, batch 64, 40 steps/epoch
    python benchmarks/train_throughput.py --no-xla   # skip the jit_compile rows
    python benchmarks/train_throughput.py --smoke    # tiny sizes, proves it still runs
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness  # noqa: E402  (sets up sys.path and the TF log level)


def _add_arguments(parser):
    parser.add_argument("--no-xla", action="store_true", help="skip the jit_compile rows")


def _setup(tf, sizes):
    from attnlab.data.sequences import make_sequence_task
    from attnlab.models.transformer import TransformerSeq2Seq

    task = make_sequence_task("reverse", seed=0, n_train=sizes["batch"] * sizes["steps"],
                              n_val=8, n_test=8, num_symbols=10, min_length=4, max_length=10)

    def make_model():
        tf.keras.utils.set_random_seed(0)
        return TransformerSeq2Seq(len(task.source_vocab), len(task.target_vocab),
                                  d_model=sizes["d_model"], num_heads=4,
                                  ff_dim=2 * sizes["d_model"], num_layers=2, max_length=16)

    return task, make_model


def _measure(tf, task, make_model, sizes, jit, epochs):
    """Steps/s of both sides, timed one epoch each in turn so load changes hit both."""
    from attnlab.train.trainer import Trainer

    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    trainer = Trainer(make_model(), tf.keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"],
                      jit_compile=jit, verbose=0)
    custom_data = task.train_fn(sizes["batch"], seed=0)
    model = make_model()
    model.compile(tf.keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"], jit_compile=jit)
    fit_data = task.dataset("train", sizes["batch"], drop_remainder=True)
    trainer.fit(custom_data, epochs=1)  # tracing
    model.fit(fit_data, epochs=1, verbose=0)
    custom_time = fit_time = 0.0
    for epoch in range(epochs):
        start = time.perf_counter()
        trainer.fit(custom_data, epochs=2 + epoch)  # one more epoch
        custom_time += time.perf_counter() - start
        start = time.perf_counter()
        model.fit(fit_data, epochs=1, verbose=0)
        fit_time += time.perf_counter() - start
    steps = epochs * sizes["steps"]
    return steps / custom_time, steps / fit_time


def main(argv=None):
    args = _harness.parse_args(__doc__.splitlines()[0], _add_arguments, argv)
    tf = _harness.configure_threads(args.threads)
    _harness.print_header("train_throughput", args)
    sizes = dict(batch=8, steps=4, d_model=16) if args.smoke else \
        dict(batch=64, steps=40, d_model=64)
    epochs = 1 if args.smoke else max(1, args.repeats // 5)
    task, make_model = _setup(tf, sizes)
    rows = []
    ratios = {}
    for jit in ([False] if args.no_xla else [False, True]):
        try:
            custom, keras = _measure(tf, task, make_model, sizes, jit, epochs)
        except Exception as err:  # XLA may be unavailable on some builds
            rows.append(("yes" if jit else "no", "failed: %s" % str(err).splitlines()[0][:80],
                         "", ""))
            continue
        ratios[jit] = custom / keras
        rows.append(("yes" if jit else "no", "%.1f" % custom, "%.1f" % keras,
                     "%.2f" % ratios[jit]))
    _harness.table("Training steps/s: custom loop vs model.fit (TransformerSeq2Seq d_model=%d, "
                   "batch %d, %d steps x %d epochs)" % (sizes["d_model"], sizes["batch"],
                                                        sizes["steps"], epochs),
                   ["XLA", "custom loop steps/s", "model.fit steps/s", "ratio"], rows)
    # Issue target: the custom loop at least as fast as model.fit, with and without XLA.
    for jit, ratio in sorted(ratios.items()):
        _harness.summary("custom loop vs model.fit throughput%s" % (" XLA" if jit else ""),
                         "%.2fx" % ratio, ">= 1.0x", ratio >= 1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
