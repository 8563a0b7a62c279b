#!/usr/bin/env python3
"""Cost of the TensorBoard attention summaries against a training epoch and a snapshot.

Trains configs/reverse_transformer.yaml (6 attention layers x 4 heads, probe of 4) on a
smaller training set, then times, on the trained model:
  epoch              the last training epoch (the ones before it trace the steps)
  snapshot           AttentionSnapshots' save: probe forward pass + compressed .npz
  summaries          AttentionSummaries.write: probe forward pass + head metrics + one
                     image per layer + the scalars, flushed to the event file
and the bytes each adds to the run folder. Summaries are on by default because they cost
a small fraction of an epoch and of the snapshot that is already written; the summary line
checks "summaries < 5% of an epoch".

Usage: python benchmarks/attention_summaries.py [--smoke] [--repeats N] [--n-train N]
"""
import glob
import os
import tempfile
import time

import _harness


def _arguments(parser):
    parser.add_argument("--n-train", type=int, default=4096, help="training examples")
    parser.add_argument("--epochs", type=int, default=2, help="epochs trained (>= 2)")


def main():
    args = _harness.parse_args(__doc__.splitlines()[0], _arguments)
    if args.smoke:
        args.n_train, args.epochs = 256, 2
    _harness.configure_threads(args.threads)
    _harness.print_header("attention_summaries", args)
    import numpy as np

    from attnlab.data.registry import make_task
    from attnlab.train.config import load_config
    from attnlab.train.observers import AttentionSnapshots, AttentionSummaries
    from attnlab.train.run_dir import RunDir
    from attnlab.train.runner import _probe, make_trainer

    config = load_config(os.path.join(_harness._ROOT, "configs", "reverse_transformer.yaml"))
    config["task"]["n_train"] = args.n_train
    config["train"]["epochs"] = args.epochs
    config["train"]["attention_summaries"] = False
    task = make_task(config["task"]["name"],
                     **{k: v for k, v in config["task"].items() if k != "name"})
    with tempfile.TemporaryDirectory() as folder:
        run = RunDir(os.path.join(folder, "run"))
        trainer = make_trainer(config, task, run, None, 0)
        train = task.train_fn(config["train"]["batch_size"])
        trainer.fit(train, args.epochs - 1)  # traces the steps
        start = time.perf_counter()
        trainer.fit(train, args.epochs)      # continues with the last epoch, timed
        epoch_ms = (time.perf_counter() - start) * 1e3
        steps = int(trainer.step.numpy()) // args.epochs

        probe = _probe(task, config["eval"]["probe_size"])
        snapshots = AttentionSnapshots(os.path.join(folder, "snap"), probe)
        summaries = AttentionSummaries(os.path.join(folder, "tb"), probe)
        for observer in (snapshots, summaries):
            observer.set_model(trainer.model)
            observer.set_counters(_counters(trainer))
        snapshot_ms = _harness.Timing(_repeat(lambda: snapshots._save(1), args))
        summary_ms = _harness.Timing(_repeat(summaries.write, args))
        summaries.on_train_end()
        npz = glob.glob(os.path.join(folder, "snap", "attention", "*.npz"))
        npz_bytes = os.path.getsize(npz[0])
        events = glob.glob(os.path.join(folder, "tb", "events.out.tfevents.*"))
        writes = args.warmup + args.repeats
        event_bytes = os.path.getsize(events[0]) / float(writes)
        layers = len(trainer.model(probe[0], return_attention=True)[1])
    shape = "%d layers, probe %d" % (layers, len(probe[1]))
    _harness.table(
        "Attention summaries vs an epoch (%s, %d steps of %d)"
        % (shape, steps, config["train"]["batch_size"]),
        ["case", "ms", "ratio to epoch", "bytes per write"],
        [["epoch", "%.0f" % epoch_ms, "1", "-"],
         ["snapshot", str(snapshot_ms), "%.4f" % (snapshot_ms.median / epoch_ms),
          "%d" % npz_bytes],
         ["summaries", str(summary_ms), "%.4f" % (summary_ms.median / epoch_ms),
          "%d" % np.round(event_bytes)]])
    ratio = summary_ms.median / epoch_ms
    _harness.summary("attention summaries vs epoch (reverse transformer)",
                     "%.2f%%" % (100 * ratio), "< 5%", ratio < 0.05)


def _counters(trainer):
    from attnlab.train.observers import RunCounters

    return RunCounters(trainer.step, trainer.epoch, trainer.batch_in_epoch)


def _repeat(fn, args):
    for _ in range(args.warmup):
        fn()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


if __name__ == "__main__":
    main()
