"""Run a validated config into a run folder: build task, model and Trainer, train, evaluate."""
import json
import os
import shutil
import time

import numpy as np

from attnlab.train.config import ConfigError, dump_config
from attnlab.train.process_exit import mark_collective_runtime_started
from attnlab.train.run_dir import RunDir, atomic_write_text

# The classifier model of token inputs of each rank: (N, T) sequences, (N, S, T) documents.
CLASSIFIERS = {2: "classifier", 3: "han"}
# Seconds before a run folder left in state "created" may be replaced by a new start.
CREATED_GRACE_S = 60.0


class RunExistsError(FileExistsError):
    """The run name is taken; pass resume=True (`--resume`) to continue it."""


def make_strategy(name, collective_timeout=None):
    """The tf.distribute strategy of `train.distribute` ("none" gives None).

    Args:
        name: "none", "mirrored" or "multi_worker" (the cluster comes from $TF_CONFIG).
        collective_timeout: multi_worker only: seconds after which a collective op that
            waits for a dead or unreachable worker fails (None: wait forever).

    Returns:
        The strategy, or None.

    Example:
        >>> strategy = make_strategy("multi_worker", collective_timeout=120)
    """
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        mark_collective_runtime_started()
        options = tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=float(collective_timeout) if collective_timeout else None)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    return None


def build_model(config, task):
    """The model of `config["model"]` sized from the task's vocabularies."""
    from attnlab.train.config import _models

    name = config["model"]["name"]
    args = {k: v for k, v in config["model"].items() if k != "name"}
    cls = _models()[name]
    if task.kind == "seq2seq":
        if name in CLASSIFIERS.values():
            raise ValueError("model.name: %r cannot learn the seq2seq task %r" % (name, task.name))
        return cls(len(task.source_vocab), len(task.target_vocab), **args)
    # Token classifiers are told apart by the rank of their inputs: (N, T) token rows or
    # (N, S, T) documents of sentences.
    rank = task.arrays("train")[0].ndim if task.source_vocab is not None else None
    if CLASSIFIERS.get(rank) != name:
        fits = ("use %r" % CLASSIFIERS[rank]) if rank in CLASSIFIERS else \
            "no model fits inputs that are not token ids"
        raise ValueError("model.name: %r does not fit the %s task %r (%s)"
                         % (name, task.kind, task.name, fits))
    return cls(len(task.source_vocab), task.num_classes, **args)


def make_scheduled_sampling(train, task):
    """The ScheduledSampling of `train.scheduled_sampling` (ramped over all epochs), or None."""
    if train["scheduled_sampling"] is None:
        return None
    if task.kind != "seq2seq":
        raise ValueError("train.scheduled_sampling: only seq2seq tasks have decoder inputs, "
                         "task %r is %s" % (task.name, task.kind))
    from attnlab.train.scheduled_sampling import ScheduledSampling
    return ScheduledSampling(train["scheduled_sampling"], ramp_epochs=train["epochs"],
                             seed=train["seed"])


def schedule_lengths(config, task):
    """The learning-rate schedule's sizes that come from the task and model, not the config.

    Returns:
        {"decay_steps": ...} for warmup_cosine (all steps after the warmup),
        {"d_model": ...} for noam (the model's width), {} without a schedule: the keyword
        arguments of `build_optimizer` beyond `train`.
    """
    train = config["train"]
    schedule = train["schedule"]
    if schedule is None:
        return {}
    if schedule["name"] == "warmup_cosine":
        total = task.steps_per_epoch(train["batch_size"]) * train["epochs"]
        return {"decay_steps": max(1, total - schedule["warmup_steps"])}
    model = config["model"]
    return {"d_model": model.get("d_model") or model.get("embed_dim") or model.get("units")
            or 64}


def build_optimizer(train, decay_steps=None, d_model=64):
    """The optimizer of the `train` config section, with its learning-rate schedule.

    Args:
        train: the validated `train` section.
        decay_steps: steps of cosine decay (needed by the warmup_cosine schedule).
        d_model: model width that scales the noam schedule.

    Returns:
        A Keras optimizer (Adam or SGD with momentum 0.9).

    Example:
        >>> optimizer = build_optimizer(config["train"], **schedule_lengths(config, task))
    """
    import tensorflow as tf

    from attnlab.train.schedules import NoamSchedule, WarmupCosine

    lr = train["learning_rate"]
    schedule = train["schedule"]
    if schedule is not None:
        if schedule["name"] == "noam":
            # The Noam schedule sets the rate itself; learning_rate is not used.
            lr = NoamSchedule(d_model, schedule["warmup_steps"], scale=schedule["scale"])
        elif decay_steps is None:
            raise ValueError("build_optimizer: the warmup_cosine schedule needs decay_steps "
                             "(see schedule_lengths), got None")
        else:
            lr = WarmupCosine(lr, schedule["warmup_steps"], decay_steps,
                              schedule["min_learning_rate"])
    if train["optimizer"] == "sgd":
        return tf.keras.optimizers.SGD(lr, momentum=0.9)
    return tf.keras.optimizers.Adam(lr, beta_2=0.98, epsilon=1e-9)


def _probe(task, size):
    """A fixed batch of validation examples with its tokens, for attention snapshots."""
    x, _, _ = task.arrays("validation")
    if task.kind == "seq2seq":
        x = {k: v[:size] for k, v in x.items()}
        vocab_in, vocab_out = task.source_vocab, task.target_vocab
        keys = [[vocab_in.tokens[i] for i in row] for row in x["source"]]
        queries = [[vocab_out.tokens[i] for i in row] for row in x["target_in"]]
        return x, queries, keys
    if task.source_vocab is None or x.ndim != 2:
        # A snapshot holds (B, H, T, S) maps over one token row per example; documents of
        # sentences (N, S, T) have no such row.
        return None
    x = x[:size]
    tokens = [[task.source_vocab.tokens[i] for i in row] for row in x]
    return x, tokens, tokens


def evaluate_task(model, task, config, split="test"):
    """Final metrics on `split`: exact match by decoding (seq2seq) or accuracy (classification).

    For the trigger task the mean attention mass on trigger tokens is reported too, for the
    documents task the mean sentence attention on the key sentence.
    """
    from attnlab.decoding import beam_search, greedy_decode

    x, y, _ = task.arrays(split)
    batch = config["eval"]["batch_size"]
    metrics = {}
    if task.kind == "seq2seq":
        correct, tokens_ok, tokens_total = 0, 0, 0
        length = y.shape[1]
        for start in range(0, len(y), batch):
            source = x["source"][start:start + batch]
            target = y[start:start + batch]
            if config["eval"]["decode"] == "beam":
                pred = beam_search(model, source, config["eval"]["beam_width"], length,
                                   config["eval"]["length_penalty"])
            else:
                pred = greedy_decode(model, source, length)
            real = target != 0
            correct += int(np.sum(np.all((pred == target) | ~real, axis=1)))
            tokens_ok += int(np.sum((pred == target) & real))
            tokens_total += int(np.sum(real))
        metrics[split + "_sequence_accuracy"] = correct / len(y)
        metrics[split + "_token_accuracy"] = tokens_ok / tokens_total
        return metrics
    correct, mass, count = 0, [], 0
    trigger = task.meta[split].get("trigger_mask")
    key_sentence = task.meta[split].get("key_sentence")
    for start in range(0, len(y), batch):
        xb = x[start:start + batch]
        if key_sentence is not None:
            logits, weights = model(xb, training=False, return_attention=True)
            on_key = np.take_along_axis(np.asarray(weights["sentence"], np.float64),
                                        key_sentence[start:start + batch, None], axis=1)
            mass.append(float(np.sum(on_key)))
        elif trigger is not None:
            from attnlab.models.classifier import attention_mass

            logits, weights = model(xb, training=False, return_attention=True)
            mass.append(attention_mass(weights["attention"], trigger[start:start + batch],
                                       xb != 0) * len(xb))
        else:
            logits = model(xb, training=False)
        correct += int(np.sum(np.argmax(np.asarray(logits), -1) == y[start:start + batch]))
        count += len(xb)
    metrics[split + "_accuracy"] = correct / count
    if key_sentence is not None:
        metrics[split + "_attention_on_key_sentence"] = float(np.sum(mass) / count)
        # Uniform attention would put 1 / (number of sentences) of the mass on the key one.
        sentences = task.meta[split]["num_sentences"]
        metrics[split + "_uniform_attention_on_key_sentence"] = float(np.mean(1.0 / sentences))
    elif mass:
        metrics[split + "_attention_on_triggers"] = float(np.sum(mass) / count)
        filler = np.mean([(row != 0).sum() - m.sum() for row, m in zip(x, trigger)])
        triggers = np.mean([m.sum() for m in trigger])
        # Uniform attention would put triggers / length of the mass on them.
        metrics[split + "_uniform_attention_on_triggers"] = float(triggers / (triggers + filler))
    return metrics


def _first_line(err):
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def check_buildable(config, model=True):
    """Build the config's task and (with model=True) its model once, before any run folder.

    validate_config checks types; the task builder and the model constructor check the
    values that depend on each other (min_length <= max_length, d_model divisible by
    num_heads, sequence lengths against the model's). One forward pass on one example
    also catches shape mismatches. Nothing is trained; the Keras session is cleared after,
    so layer names and seeds of the real run are unchanged.

    Args:
        config: a validated config.
        model: also build the model (skip it where TensorFlow must not start yet: a
            multi-worker strategy has to be created first).

    Returns:
        The task (reused by the run, so it is built once).

    Raises:
        ConfigError: "task: ..." or "model: ..." with the builder's message.
    """
    from attnlab.data.registry import make_task

    try:
        task = make_task(config["task"]["name"],
                         **{k: v for k, v in config["task"].items() if k != "name"})
    except (ValueError, TypeError) as err:
        raise ConfigError("task %r: %s" % (config["task"]["name"], _first_line(err))) from None
    if not model:
        return task
    import tensorflow as tf

    try:
        built = build_model(config, task)
        make_scheduled_sampling(config["train"], task)
    except (ValueError, TypeError) as err:
        message = _first_line(err)
        prefix = "" if message.startswith(("model.", "train.")) else \
            "model %r: " % config["model"]["name"]
        raise ConfigError(prefix + message) from None
    try:
        # The final evaluation's path (decoding to the target length, attention outputs)
        # on one example: sizes that fit training but not decoding fail here, not after it.
        tiny = _one_example(task)
        x = tiny.arrays("train")[0]
        built(x, training=False)
        evaluate_task(built, tiny, config, "test")
    except Exception as err:  # noqa: BLE001 - any failure here is the config's
        raise ConfigError("model %r does not fit task %r: %s"
                          % (config["model"]["name"], task.name, _first_line(err))) from None
    finally:
        tf.keras.backend.clear_session()
    return task


def _one_example(task):
    """A copy of `task` with the first example of each split (and of its meta data)."""
    from attnlab.data.task import Task

    def first(value):
        if isinstance(value, dict):
            return {k: first(v) for k, v in value.items()}
        return value[:1] if hasattr(value, "__getitem__") and not isinstance(value, str) \
            else value

    splits = {name: first(data) for name, data in task.splits.items()}
    meta = {name: first(data) for name, data in task.meta.items()}
    return Task(task.name, task.kind, splits, task.source_vocab, task.target_vocab,
                task.num_classes, meta)


def _replaceable(path):
    """Whether run folder `path` is a start that failed before its first checkpoint.

    Such a folder holds no training; a new start under the same name may replace it. A
    "created" one only once it is a minute old: until then it may be another start of the
    same name on its way to "running".
    """
    from attnlab.train.run_dir import read_status

    status = read_status(path)
    if not status or status.get("state") not in ("created", "failed") or status.get("step"):
        return False
    if status.get("state") == "created":
        try:
            age = time.time() - os.path.getmtime(os.path.join(path, "status.json"))
        except OSError:
            return False
        if age < CREATED_GRACE_S:
            return False
    checkpoints = os.path.join(path, "checkpoints")
    return not (os.path.isdir(checkpoints) and os.listdir(checkpoints))


def prepare_run(config, runs_dir, name, resume=False):
    """Create (or reopen with resume=True) runs_dir/name and write the resolved config.

    A folder left by a start that failed before training (state created/failed, step 0,
    no checkpoint) is replaced by a new start.
    """
    path = os.path.join(runs_dir, name)
    if os.path.exists(runs_dir) and not os.path.isdir(runs_dir):
        raise NotADirectoryError("runs folder %s is not a folder" % runs_dir)
    if os.path.isdir(path) and not resume and _replaceable(path):
        shutil.rmtree(path)
    if os.path.exists(path) and not resume:
        raise RunExistsError("run %r already exists in %s; use --resume to continue it or "
                             "--name to pick another name" % (name, runs_dir))
    if resume and not os.path.exists(os.path.join(path, "config.yaml")):
        raise FileNotFoundError("cannot resume run %r: %s has no config.yaml" % (name, path))
    run = RunDir(path)
    if not resume:
        atomic_write_text(run.file("config.yaml"), dump_config(config))
        run.write_status("created", pid=None, epoch=0, step=0, metrics={}, error=None,
                         created=time.time())
    return run


def run_training(config, run, verbose=None, restore_from=None, task=None):
    """Train `config` into the RunDir `run` (resuming from its checkpoints), then evaluate.

    Args:
        config: a validated config (not modified: derived sizes are passed on explicitly).
        run: the RunDir to write (a non-chief worker's is a scratch folder).
        verbose: progress bar on (1) or off (0); default: the config's.
        restore_from: checkpoints folder to resume from (default: the run's own).
        task: the config's task when already built (by check_buildable).

    Returns:
        The final metrics dict (also written to metrics.json).
    """
    from attnlab.data.registry import make_task

    train = config["train"]
    strategy = make_strategy(train["distribute"], train["collective_timeout"])
    _set_global_tf_options(train)
    if task is None:
        task = make_task(config["task"]["name"],
                         **{k: v for k, v in config["task"].items() if k != "name"})
    trainer = make_trainer(config, task, run, strategy,
                           train["verbose"] if verbose is None else verbose, restore_from)
    started = time.time()
    trainer.fit(task.train_fn(train["batch_size"], seed=train["seed"]), train["epochs"],
                validation=task.dataset("validation", config["eval"]["batch_size"]))
    if not trainer.completed:
        return None  # stopped by request: no final metrics yet
    metrics = {k: v[-1] for k, v in trainer.history.items()}
    metrics.update(evaluate_task(trainer.model, task, config, "test"))
    metrics["train_seconds"] = time.time() - started
    metrics["step"] = int(trainer.step.numpy())
    run.write_metrics(metrics)
    run.log("finished: " + json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                       for k, v in metrics.items()}))
    run.write_status("finished", metrics=metrics)
    return metrics


def _set_global_tf_options(train):
    """Determinism, seeds and precision policy: process-wide, so set before building."""
    import tensorflow as tf

    if train["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    tf.keras.utils.set_random_seed(train["seed"])
    if train["mixed_precision"]:
        tf.keras.mixed_precision.set_global_policy("mixed_float16")


def make_trainer(config, task, run, strategy, verbose, restore_from=None):
    """The Trainer of a validated config: model and optimizer in the strategy's scope.

    Args:
        config: a validated config (not modified).
        task: its task (sizes the model, the schedule and the attention probe).
        run: the RunDir the Trainer writes (its observers and checkpoints).
        strategy: a tf.distribute strategy or None.
        verbose: progress bar on (1) or off (0).
        restore_from: checkpoints folder to resume from (default: the run's own).

    Returns:
        A Trainer that leaves the run "running" when done (the runner then evaluates).
    """
    import tensorflow as tf

    from attnlab.train.trainer import Trainer

    train = config["train"]
    with strategy.scope() if strategy is not None else _null_scope():
        model = build_model(config, task)
        optimizer = build_optimizer(train, **schedule_lengths(config, task))
    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return Trainer(model, optimizer, loss, metrics=["accuracy"], strategy=strategy,
                   jit_compile=train["jit_compile"], clip_norm=train["clip_norm"],
                   nan_policy=train["nan_policy"], run_dir=run,
                   checkpoint_every=train["checkpoint_every"],
                   keep_checkpoints=train["keep_checkpoints"], seed=train["seed"],
                   verbose=verbose, probe=_probe(task, config["eval"]["probe_size"]),
                   snapshot_every=train["snapshot_every"], finish_run=False,
                   attention_summaries=train["attention_summaries"],
                   scheduled_sampling=make_scheduled_sampling(train, task),
                   restore_from=restore_from)


class _null_scope:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
