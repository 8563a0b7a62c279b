"""Steps per second of one process vs two MultiWorkerMirroredStrategy workers on this machine.

Both train the same model on the same global batch with the attnlab Trainer: one process
alone, then two worker processes on 127.0.0.1 (TF_CONFIG as `attnlab launch` writes it),
started together. Worker 0 then profiles a few more steps; the collective ops' time per step
(the gradient all-reduce, including the wait for the other worker) is the communication
time. On a 2-core machine two workers share the cores, so no speed-up is expected: the
point of multi-worker here is correctness, and the figures show its cost.

Usage:
    python benchmarks/multi_worker.py              # transformer of configs/tiny_reverse.yaml
    python benchmarks/multi_worker.py --smoke      # a few steps, proves it runs
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _threads():
    """Threads of this process (Linux), or -1."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return -1


def worker(args):
    """One process of the benchmark (alone or one worker): writes its figures as JSON."""
    sys.path.insert(0, ROOT)
    sys.path.insert(0, HERE)
    import tensorflow as tf

    from attnlab.data.registry import make_task
    from attnlab.train.config import load_config
    from attnlab.train.runner import build_model, build_optimizer, make_strategy, schedule_lengths
    from attnlab.train.trainer import Trainer

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    config = load_config(os.path.join(ROOT, "configs", "tiny_reverse.yaml"))
    strategy = make_strategy("multi_worker", args.collective_timeout or None) \
        if args.index is not None else None
    tf.keras.utils.set_random_seed(0)
    task_args = {k: v for k, v in config["task"].items() if k != "name"}
    task_args["n_train"] = args.batch * args.steps
    task = make_task(config["task"]["name"], **task_args)
    scope = strategy.scope() if strategy is not None else tf.name_scope("single")
    with scope:
        model = build_model(config, task)
        optimizer = build_optimizer(config["train"], **schedule_lengths(config, task))
    trainer = Trainer(model, optimizer,
                      tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      strategy=strategy, verbose=0)
    train = task.train_fn(args.batch, seed=0)
    trainer.fit(train, 1)  # traces the step
    threads = [_threads()]
    start_step, start = int(trainer.step.numpy()), time.perf_counter()
    trainer.fit(train, 1 + args.epochs)
    seconds = time.perf_counter() - start
    steps = int(trainer.step.numpy()) - start_step
    threads.append(_threads())
    result = {"steps": steps, "seconds": seconds, "threads": threads}
    if args.index == 0:
        import op_profile

        with tempfile.TemporaryDirectory(prefix="multi_worker_profile_") as logdir:
            before = int(trainer.step.numpy())
            tf.profiler.experimental.start(logdir)
            trainer.fit(train, 2 + args.epochs)
            tf.profiler.experimental.stop()
            profiled = int(trainer.step.numpy()) - before
            totals = op_profile.op_totals(logdir)  # collective ops are op types too
        result["profiled_steps"] = profiled
        result["ops"] = {op: [ms / profiled, count / profiled]
                         for op, (ms, count) in totals.items()}
    elif args.index is not None:
        trainer.fit(train, 2 + args.epochs)  # the other side of worker 0's profiled epoch
    with open(args.out, "w") as f:
        json.dump(result, f)


def _run(args, extra, env=None):
    command = [sys.executable, os.path.abspath(__file__), "--threads", str(args.threads),
               "--steps", str(args.steps), "--epochs", str(args.epochs),
               "--collective-timeout", str(args.collective_timeout)] + extra
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _finish(proc, what):
    output = proc.communicate(timeout=1800)[0].decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit("%s failed (exit %d):\n%s" % (what, proc.returncode, output[-4000:]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a few steps: proves it runs")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads per process")
    parser.add_argument("--steps", type=int, default=None, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=None, help="timed epochs")
    parser.add_argument("--batch", type=int, default=64, help="global batch")
    parser.add_argument("--collective-timeout", type=float, default=0,
                        help="train.collective_timeout of the workers (0: none)")
    parser.add_argument("--index", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.steps = args.steps or (4 if args.smoke else 50)
    args.epochs = args.epochs or (1 if args.smoke else 4)
    if args.out:
        return worker(args)

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    with tempfile.TemporaryDirectory(prefix="multi_worker_bench_") as folder:
        single_out = os.path.join(folder, "single.json")
        _finish(_run(args, ["--out", single_out, "--batch", str(args.batch)], env), "1 process")
        from attnlab.train.launch import free_local_ports

        ports = free_local_ports(2)
        cluster = {"worker": ["127.0.0.1:%d" % p for p in ports]}
        procs = []
        for index in range(2):
            worker_env = dict(env, TF_CONFIG=json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}))
            procs.append(_run(args, ["--out", os.path.join(folder, "w%d.json" % index),
                                     "--index", str(index), "--batch", str(args.batch)],
                              worker_env))
        for index, proc in enumerate(procs):
            _finish(proc, "worker %d" % index)
        results = {}
        for name in ("single", "w0", "w1"):
            with open(os.path.join(folder, name + ".json")) as f:
                results[name] = json.load(f)

    single = results["single"]["steps"] / results["single"]["seconds"]
    multi = results["w0"]["steps"] / results["w0"]["seconds"]
    print("## Multi-worker training, transformer of configs/tiny_reverse.yaml, global batch "
          "%d, %d intra-op threads per process, %d timed steps\n" % (
              args.batch, args.threads, results["single"]["steps"]))
    print("| case | steps/s | ms/step | steps/s vs 1 process |")
    print("|---|---|---|---|")
    print("| 1 process | %.1f | %.1f | 1.00x |" % (single, 1e3 / single))
    print("| 2 workers (127.0.0.1) | %.1f | %.1f | %.2fx |" % (multi, 1e3 / multi,
                                                                multi / single))
    print("\nthreads per process after the first epoch -> after the timed ones: 1 process "
          "%d -> %d, worker 0 %d -> %d, worker 1 %d -> %d" % tuple(
              results["single"]["threads"] + results["w0"]["threads"] +
              results["w1"]["threads"]))
    ops = results["w0"]["ops"]
    collective = {op: v for op, v in ops.items() if op.startswith("Collective")}
    step_ms = sum(ms for ms, _ in ops.values())
    comm_ms = sum(ms for ms, _ in collective.values())
    print("\n## Worker 0 profile, %d steps: collective ops (communication, with the wait for "
          "the other worker)\n" % results["w0"]["profiled_steps"])
    print("| op | ms per step | ops per step |")
    print("|---|---|---|")
    for op, (ms, count) in sorted(collective.items(), key=lambda kv: -kv[1][0]):
        print("| %s | %.2f | %.1f |" % (op, ms, count))
    print("| all collective ops | %.2f | %.1f |" % (
        comm_ms, sum(count for _, count in collective.values())))
    print("| all kernels | %.2f | %.1f |" % (step_ms, sum(count for _, count in ops.values())))
    print("\ncommunication: %.2f ms per step, %.0f%% of a timed 2-worker step (%.1f ms); the "
          "rest of the step is outside the kernels (executor, gRPC, the other process)"
          % (comm_ms, 100 * comm_ms * multi / 1e3, 1e3 / multi))
    return 0


if __name__ == "__main__":
    code = main()
    # A worker process ends like `attnlab launch` does: without the collective runtime's
    # teardown, which can abort on TF 2.9 (attnlab/train/process_exit.py).
    sys.stdout.flush()
    os._exit(code or 0)
