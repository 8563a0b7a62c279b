"""A custom training loop with a Keras-like interface that resumes exactly after a kill.

The Trainer runs the steps, the epoch loop and the checkpoints exact resume needs; run
observers (attnlab.train.observers, Keras callbacks) write the rest of the run folder.
"""
import inspect
import os
import time

import tensorflow as tf

from attnlab.train.checkpoints import TrainingCheckpoints
from attnlab.train.cluster import is_chief, is_multi_worker
from attnlab.train.observers.progress import ProgressBar
from attnlab.train.observers.run_folder import run_folder_observers
from attnlab.train.observers.run_observer import RunCounters, notify
from attnlab.train.observers.stop_on_signal import StopOnSignal
from attnlab.train.run_dir import RunDir

NAN_POLICIES = ("stop", "skip")
# Multi-worker runs agree on a stop request (SIGTERM, `attnlab stop`) every this many steps:
# every worker must stop, and checkpoint, after the same step.
STOP_CHECK_STEPS = 10
# What a collective op raises when a peer worker died or stopped answering.
_PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                tf.errors.CancelledError, tf.errors.AbortedError)


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or Inf loss or gradient (nan_policy="stop")."""


class WorkerLostError(RuntimeError):
    """A peer of a multi-worker run died or stopped answering; this worker stopped too."""


def _per_example_loss_fn(loss):
    """A function (y, pred) -> unreduced loss, from a Keras loss name, object or function."""
    if isinstance(loss, str):
        loss = tf.keras.losses.get(loss)
    if isinstance(loss, tf.keras.losses.Loss):
        config = dict(loss.get_config(), reduction=tf.keras.losses.Reduction.NONE)
        return loss.__class__.from_config(config)
    if callable(loss):
        return loss
    raise TypeError("loss must be a Keras loss name, a tf.keras.losses.Loss or a function "
                    "(y_true, y_pred) -> loss, got %r" % (loss,))


def _metric(metric):
    """A Keras metric object from a name ("accuracy" means sparse labels), object or function."""
    if isinstance(metric, str):
        if metric in ("accuracy", "acc"):
            return tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        fn = tf.keras.metrics.get(metric)
        if isinstance(fn, tf.keras.metrics.Metric):
            return fn
        return tf.keras.metrics.MeanMetricWrapper(fn, name=metric)
    if isinstance(metric, tf.keras.metrics.Metric):
        return metric
    if callable(metric):
        return tf.keras.metrics.MeanMetricWrapper(metric, name=getattr(metric, "__name__",
                                                                       "metric"))
    raise TypeError("metrics must be Keras metric names, objects or functions, got %r"
                    % (metric,))


def _unpack(batch):
    if isinstance(batch, (tuple, list)):
        if len(batch) == 3:
            return batch[0], batch[1], batch[2]
        if len(batch) == 2:
            return batch[0], batch[1], None
    raise ValueError("a training batch must be (x, y) or (x, y, sample_weight), got %d items"
                     % (len(batch) if isinstance(batch, (tuple, list)) else 1))


def _dense_values(gradient):
    """The stored values of a gradient: those of an IndexedSlices, not a densified copy."""
    return gradient.values if isinstance(gradient, tf.IndexedSlices) else gradient


def _apply_kwarg(optimizer):
    """The apply_gradients argument that turns off gradient all-reduce (old or new optimizer)."""
    params = inspect.signature(optimizer.apply_gradients).parameters
    for name in ("skip_gradients_aggregation", "experimental_aggregate_gradients"):
        if name in params:
            return name
    return None


def _counter(name):
    return tf.Variable(0, dtype=tf.int64, trainable=False, name=name)


def _check_arguments(model, nan_policy, clip_norm, checkpoint_every, snapshot_every,
                     keep_checkpoints, jit_compile):
    if not isinstance(model, tf.keras.Model):
        raise TypeError("model must be a tf.keras.Model, got %r" % (model,))
    if nan_policy not in NAN_POLICIES:
        raise ValueError("nan_policy must be one of %s, got %r" % (NAN_POLICIES, nan_policy))
    if clip_norm is not None and (isinstance(clip_norm, bool) or
                                  not isinstance(clip_norm, (int, float)) or clip_norm <= 0):
        raise ValueError("clip_norm must be a positive number or None, got %r" % (clip_norm,))
    for name, value in (("checkpoint_every", checkpoint_every),
                        ("snapshot_every", snapshot_every)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or
                                  value <= 0):
            raise ValueError("%s must be a positive integer or None, got %r" % (name, value))
    if isinstance(keep_checkpoints, bool) or not isinstance(keep_checkpoints, int) or \
            keep_checkpoints <= 0:
        raise ValueError("keep_checkpoints must be a positive integer, got %r"
                         % (keep_checkpoints,))
    if not isinstance(jit_compile, bool):
        raise TypeError("jit_compile must be a bool, got %r" % (jit_compile,))


class Trainer:
    """Trains a Keras model with a GradientTape loop: exact resume, NaN guard, distribution.

    Create the model and optimizer inside `strategy.scope()` when a strategy is used. Under
    the `mixed_float16` policy the optimizer is wrapped in a LossScaleOptimizer and losses
    are computed on float32 outputs. The loss is averaged over the *global* batch
    (`tf.nn.compute_average_loss`), so several replicas give the single-replica gradients.

    Exact resume: the checkpoint holds the model, optimizer, step, epoch, batches done in the
    epoch, the trainer's tf.random.Generator and the running train metrics. When `train` is a
    function `(epoch, skip_batches) -> Dataset` whose order depends only on the epoch (see
    `Task.train_fn`), a run killed at any moment and resumed ends with the weights of an
    uninterrupted run, given deterministic ops (`tf.config.experimental.enable_op_determinism`)
    and a model without unseeded randomness (Keras Dropout state is not checkpointed).

    Args:
        model: a tf.keras.Model; its call may take `return_attention=True` for snapshots.
        optimizer: a Keras optimizer (wrapped for loss scaling under mixed_float16).
        loss: Keras loss name, tf.keras.losses.Loss, or function (y, pred) -> per-element loss.
        metrics: Keras metrics (names or objects) updated with (y, pred, sample_weight).
        strategy: optional tf.distribute strategy (Mirrored, MultiWorkerMirrored).
        jit_compile: compile the train step with XLA.
        clip_norm: clip gradients to this global norm (after the cross-replica sum).
        nan_policy: "stop" (raise NonFiniteLossError naming the step) or "skip" (do not apply
            the step's update and go on).
        run_dir: a run folder path or RunDir; enables checkpoints and, on the chief, the
            observers of `run_folder_observers` (train.log, TensorBoard, status.json,
            attention snapshots). None trains without writing anything.
        checkpoint_every: also checkpoint every this many steps (None: at epoch ends only).
        keep_checkpoints: checkpoints kept by the CheckpointManager.
        seed: seed of the trainer's tf.random.Generator (`trainer.rng`).
        verbose: 1 shows a progress bar (ProgressBar), 0 is silent (epoch lines still go
            to train.log).
        probe: optional (x, query_tokens, key_tokens) batch whose attention weights are saved
            every `snapshot_every` epochs into run_dir/attention/.
        snapshot_every: epochs between attention snapshots.
        attention_summaries: with a probe, also write the probe's attention maps (images)
            and head metrics (scalars attention/<layer>/head<h>/<metric>) to the run's
            TensorBoard folder at every snapshot (see AttentionSummaries).
        restore_from: checkpoints folder to restore from (default: the run folder's); a
            non-chief worker, whose run folder is a scratch one, restores from the chief's.
        finish_run: mark the run folder "finished" when `fit` completes; False when the
            caller still has work to do first (the runner's final test evaluation), so that
            a watcher never sees "finished" before the final metrics exist.
        scheduled_sampling: optional `ScheduledSampling` that mixes the model's own
            predictions into the decoder inputs of each training batch (seq2seq models).

    Example:
        >>> trainer = Trainer(model, tf.keras.optimizers.Adam(1e-3),
        ...                   tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        ...                   metrics=["sparse_categorical_accuracy"], run_dir="runs/demo")
        >>> history = trainer.fit(task.train_fn(32), epochs=3,
        ...                       validation=task.dataset("validation", 64))
    """

    def __init__(self, model, optimizer, loss, metrics=None, strategy=None, jit_compile=False,
                 clip_norm=None, nan_policy="stop", run_dir=None, checkpoint_every=None,
                 keep_checkpoints=3, seed=0, verbose=1, probe=None, snapshot_every=1,
                 finish_run=True, scheduled_sampling=None, restore_from=None,
                 attention_summaries=True):
        _check_arguments(model, nan_policy, clip_norm, checkpoint_every, snapshot_every,
                         keep_checkpoints, jit_compile)
        if not isinstance(attention_summaries, bool):
            raise TypeError("attention_summaries must be a bool, got %r"
                            % (attention_summaries,))
        self.attention_summaries = attention_summaries
        self.model = model
        self.strategy = strategy or tf.distribute.get_strategy()
        self.jit_compile = jit_compile
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.nan_policy = nan_policy
        self.verbose = verbose
        self.probe = probe
        self.snapshot_every = snapshot_every
        self.finish_run = finish_run
        self.scheduled_sampling = scheduled_sampling
        self.completed = False  # True once a fit() call has trained every epoch
        self.checkpoint_every = checkpoint_every
        self.loss_fn = _per_example_loss_fn(loss)
        self.is_chief = is_chief(self.strategy)
        self.multi_worker = is_multi_worker(self.strategy)
        self.restore_from = restore_from
        self.run = run_dir if run_dir is None or isinstance(run_dir, RunDir) else RunDir(run_dir)
        with self.strategy.scope():
            self._create_state(optimizer, metrics, seed)
        self._apply_kwarg = _apply_kwarg(self.optimizer)
        self._agree_fn = None
        self._built = False
        self._train_step = None
        self._eval_step = None
        self.history = {}
        self.checkpoint = tf.train.Checkpoint(
            model=model, optimizer=self.optimizer, step=self.step, epoch=self.epoch,
            batch_in_epoch=self.batch_in_epoch, skipped_steps=self.skipped_steps, rng=self.rng,
            train_metrics=tf.train.Checkpoint(loss=self.loss_metric, **{
                "m%d" % i: m for i, m in enumerate(self.metrics)}))
        self._checkpoints = None if self.run is None else TrainingCheckpoints(
            self.checkpoint, self.run.checkpoint_dir, keep_checkpoints, self.is_chief,
            restore_from)
        self.manager = self._checkpoints.manager if self._checkpoints else None

    def _create_state(self, optimizer, metrics, seed):
        """Optimizer (loss-scaled under float16), counters, generator and metrics."""
        policy = tf.keras.mixed_precision.global_policy()
        self.loss_scaling = policy.compute_dtype == "float16" or \
            getattr(self.model, "compute_dtype", None) == "float16"
        if self.loss_scaling and not isinstance(
                optimizer, tf.keras.mixed_precision.LossScaleOptimizer):
            optimizer = tf.keras.mixed_precision.LossScaleOptimizer(optimizer)
        self.optimizer = optimizer
        self.step, self.epoch = _counter("step"), _counter("epoch")
        self.batch_in_epoch, self.skipped_steps = _counter("batch_in_epoch"), \
            _counter("skipped_steps")
        # First step with a non-finite loss or gradient since the last check (0: none).
        # Kept on the device so the loop needs no host sync per step.
        self.first_bad_step = _counter("first_bad_step")
        self.rng = tf.random.Generator.from_seed(seed)
        self.loss_metric = tf.keras.metrics.Mean(name="loss")
        self.metrics = [_metric(m) for m in (metrics or [])]
        self.val_loss_metric = tf.keras.metrics.Mean(name="loss")
        self.val_metrics = [m.__class__.from_config(m.get_config()) for m in self.metrics]

    # ----------------------------------------------------------------------------- steps
    def _per_example(self, y, pred, weight):
        pred = tf.nest.map_structure(lambda p: tf.cast(p, tf.float32), pred)
        loss = tf.cast(self.loss_fn(y, pred), tf.float32)
        if weight is not None:
            loss = loss * tf.cast(weight, tf.float32)
        if loss.shape.rank is not None and loss.shape.rank > 1:
            # Per-token losses: mean over positions (padding weighs 0), so each example counts
            # once in the global-batch average.
            loss = tf.reduce_mean(tf.reshape(loss, [tf.shape(loss)[0], -1]), axis=1)
        return loss, pred

    def _replica_train_step(self, x, y, weight):
        replicas = self.strategy.num_replicas_in_sync
        if self.scheduled_sampling is not None:
            x = self.scheduled_sampling(self.model, x, self.epoch, self.step)
        loss, per_example, pred, grads = self._loss_and_gradients(x, y, weight, replicas)
        aggregated = replicas > 1 and self._apply_kwarg is not None
        if aggregated:
            # Sum over replicas here so that clipping and the NaN check see global gradients.
            grads = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, grads)
        global_loss = loss
        if replicas > 1:
            global_loss = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, loss)
        finite = self._is_finite(global_loss, grads)
        self._apply(grads, finite, aggregated, replicas)
        self.loss_metric.update_state(per_example)
        for metric in self.metrics:
            metric.update_state(y, pred, sample_weight=weight)
        return global_loss, finite

    def _loss_and_gradients(self, x, y, weight, replicas):
        """This replica's share of the global-batch loss, and its (unscaled) gradients."""
        with tf.GradientTape() as tape:
            pred = self.model(x, training=True)
            per_example, pred = self._per_example(y, pred, weight)
            global_batch = tf.shape(per_example)[0] * replicas
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            if self.model.losses:
                loss += tf.nn.scale_regularization_loss(
                    tf.add_n([tf.cast(v, tf.float32) for v in self.model.losses]))
            scaled = self.optimizer.get_scaled_loss(loss) if self.loss_scaling else loss
        grads = tape.gradient(scaled, self.model.trainable_variables)
        if self.loss_scaling:
            grads = self.optimizer.get_unscaled_gradients(grads)
        return loss, per_example, pred, grads

    def _is_finite(self, global_loss, grads):
        finite = tf.math.is_finite(global_loss)
        if not self.loss_scaling:
            # With loss scaling, overflowing gradients are normal: the optimizer skips them.
            # A NaN or inf anywhere makes the sum of all gradient entries non-finite (so
            # does a sum beyond float32's range, from entries that large): one reduction
            # per gradient, where is_finite + reduce_all wrote and read a boolean copy of
            # each (a few percent of a small Transformer's step).
            finite = tf.logical_and(finite, tf.math.is_finite(tf.add_n(
                [tf.reduce_sum(tf.cast(_dense_values(g), tf.float32))
                 for g in grads if g is not None])))
        return finite

    def _apply(self, grads, finite, aggregated, replicas):
        """Clip and apply the gradients unless they (or an earlier step's) were not finite."""
        update = finite
        if self.nan_policy == "stop":
            # After a bad step nothing more is applied: the loop raises at its next check.
            update = tf.logical_and(finite, tf.equal(self.first_bad_step, 0))
        if self.clip_norm is not None:
            grads, _ = tf.clip_by_global_norm(grads, self.clip_norm)
        kwargs = {}
        if aggregated:
            kwargs[self._apply_kwarg] = self._apply_kwarg == "skip_gradients_aggregation"
        pairs = list(zip(grads, self.model.trainable_variables))

        def apply():
            self.optimizer.apply_gradients(pairs, **kwargs)
            return tf.constant(True)

        if replicas > 1:
            # A merge_call cannot run inside a cond: replace bad gradients by zeros instead.
            pairs = [(tf.where(update, g, tf.zeros_like(g)), v) for g, v in pairs]
            apply()
        else:
            tf.cond(update, apply, lambda: tf.constant(False))

    def _replica_eval_step(self, x, y, weight):
        pred = self.model(x, training=False)
        per_example, pred = self._per_example(y, pred, weight)
        self.val_loss_metric.update_state(per_example)
        for metric in self.val_metrics:
            metric.update_state(y, pred, sample_weight=weight)
        return tf.constant(0)

    def _make_steps(self):
        strategy = self.strategy
        replica_train = tf.function(self._replica_train_step, jit_compile=self.jit_compile) \
            if self.jit_compile else self._replica_train_step

        @tf.function
        def train_step(iterator):
            # The batch is read inside the graph (like Keras' train_function): no eager
            # get_next op and no per-step packing of the batch's tensors in Python.
            x, y, w = _unpack(next(iterator))
            loss, finite = strategy.run(replica_train, args=(x, y, w))
            loss = strategy.experimental_local_results(loss)[0]
            finite = strategy.experimental_local_results(finite)[0]
            # The counters wait for the step's results: when the data has run out, the
            # call fails at next() and must not count a step (resume skips by these).
            with tf.control_dependencies([loss, finite]):
                step = self.step.assign_add(1)
                self.batch_in_epoch.assign_add(1)
                # Branch-free bookkeeping of bad steps (no tf.cond in the step's graph).
                bad = tf.logical_not(finite)
                self.skipped_steps.assign_add(tf.cast(bad, tf.int64))
                first_bad = self.first_bad_step.read_value()
                self.first_bad_step.assign(
                    tf.where(tf.logical_and(bad, tf.equal(first_bad, 0)), step, first_bad))
            return tf.identity(loss)

        @tf.function
        def eval_step(batch):
            x, y, w = _unpack(batch)
            return strategy.run(self._replica_eval_step, args=(x, y, w))

        self._train_step, self._eval_step = train_step, eval_step

    def _count_batches(self, cardinality):
        """Whether the epoch loop may stop after `cardinality` steps rather than at the end
        of the data: only for a known count of batches that one process reads whole."""
        return cardinality >= 0 and self.strategy.num_replicas_in_sync == 1 and \
            not isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy)

    def _distribute(self, dataset):
        if self.strategy.num_replicas_in_sync == 1 and \
                not isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return dataset
        return self.strategy.experimental_distribute_dataset(dataset)

    def _build(self, dataset):
        """Create model and optimizer variables before restoring or tracing."""
        if self._built:
            return
        batch = next(iter(dataset))
        x, _, _ = _unpack(batch)
        with self.strategy.scope():
            if not self.model.built:
                self.model(x, training=False)
            variables = self.model.trainable_variables
            inner = getattr(self.optimizer, "inner_optimizer", self.optimizer)
            if hasattr(inner, "build") and not hasattr(inner, "_create_all_weights"):
                inner.build(variables)  # Keras >= 2.11 optimizer
            elif hasattr(inner, "_create_all_weights"):
                inner._create_all_weights(variables)  # legacy OptimizerV2 (TF 2.9)
        self._make_steps()
        self._built = True

    # ----------------------------------------------------------------------------- state
    def restore(self, on_skip=None):
        """Restore the latest loadable checkpoint; returns its path or None.

        A checkpoint that fails to load (a write cut short, a missing or damaged file) is
        passed over for the one before it, and `on_skip(message)` is told why. Every
        worker restores from the chief's folder (`restore_from`; non-chief workers save
        into a scratch one). Raises CheckpointRestoreError when none loads.
        """
        return self._checkpoints.restore(on_skip) if self._checkpoints else None

    def _workers_sum(self, values):
        """Element-wise sum of `values` (numbers) over all workers: a collective op."""
        if self._agree_fn is None:
            strategy = self.strategy

            def replica_sum(x):
                # identity: a fresh tensor on this replica's device (an eager constant may
                # be pinned to /job:localhost, which the collective cannot place).
                return tf.distribute.get_replica_context().all_reduce(
                    tf.distribute.ReduceOp.SUM, tf.identity(x))

            @tf.function
            def agree(x):
                return strategy.experimental_local_results(strategy.run(replica_sum,
                                                                        args=(x,)))[0]

            self._agree_fn = agree
        return self._agree_fn(tf.constant(values, tf.float64)).numpy().tolist()

    def _check_same_restore(self, restored):
        """Make sure every worker restored the chief's step (two collective ops)."""
        step = int(self.step.numpy())
        chief_step = int(self._workers_sum([step if self.is_chief else 0])[0])
        differing = int(self._workers_sum([float(step != chief_step)])[0])
        if differing:
            raise RuntimeError(
                "%d worker(s) restored another checkpoint than the chief (step %d; this "
                "worker: step %d from %s). Every worker must read the chief's checkpoints "
                "folder %s: share the runs folder between the hosts, or copy the chief's "
                "checkpoints to every host before relaunching."
                % (differing, chief_step, step, os.path.basename(restored or "none"),
                   self._checkpoints.restore_from))

    def save(self):
        """Write a checkpoint numbered by the global step (CheckpointManager: files, then index)."""
        return self._checkpoints.save(int(self.step.numpy())) if self._checkpoints else None

    def request_stop(self, *_):
        """Ask the loop to checkpoint and return after the current step (as SIGTERM does).

        The request is Keras' `model.stop_training`, so callbacks can stop a run too (the
        loop looks at it after each step).
        """
        self.model.stop_training = True

    # ----------------------------------------------------------------------------- epoch logs
    def _results(self, prefix=""):
        metrics = [self.loss_metric] + self.metrics if not prefix else \
            [self.val_loss_metric] + self.val_metrics
        return {prefix + m.name: float(m.result().numpy()) for m in metrics}

    def _learning_rate(self):
        inner = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        lr = getattr(inner, "learning_rate", None)
        if lr is None:
            lr = getattr(inner, "lr", None)
        if isinstance(lr, tf.keras.optimizers.schedules.LearningRateSchedule):
            return float(lr(self.step).numpy())
        try:
            return float(tf.keras.backend.get_value(lr))
        except (TypeError, ValueError):
            return float("nan")

    # ----------------------------------------------------------------------------- loops
    def evaluate(self, dataset):
        """Loss and metrics of the model on `dataset` (batches (x, y) or (x, y, weight))."""
        if not self._built:
            self._build(dataset)
        for metric in [self.val_loss_metric] + self.val_metrics:
            metric.reset_state()
        for batch in self._distribute(dataset):
            self._eval_step(batch)
        return {k: v for k, v in self._results("val_").items()}

    def fit(self, train, epochs, validation=None, steps_per_epoch=None, resume=True,
            callbacks=None):
        """Train until `epochs` epochs are done, resuming from the latest checkpoint.

        Args:
            train: a function `(epoch, skip_batches) -> Dataset` (exact resume inside an
                epoch) or a tf.data.Dataset (re-iterated each epoch; resumed with `skip`).
            epochs: total number of epochs (a resumed run continues to this number).
            validation: optional dataset evaluated at each epoch end ("val_" metrics).
            steps_per_epoch: progress bar length (default: the dataset's cardinality).
            resume: restore the latest checkpoint of the run folder first.
            callbacks: more Keras callbacks or RunObservers (attnlab.train.observers); they
                hear epoch ends (with the epoch's logs), train begin and end, and, every
                half second or so, a batch end with the step's loss.

        Returns:
            History dict: metric name -> list of per-epoch values (epochs run in this call;
            for a run restored already complete, the last epoch's values, recomputed).

        Raises:
            CheckpointRestoreError: the run has checkpoints but none could be restored.
        """
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs <= 0:
            raise ValueError("epochs must be a positive integer, got %r" % (epochs,))
        if isinstance(train, tf.data.Dataset):
            dataset = train

            def train(epoch, skip_batches=0):
                return dataset.skip(skip_batches) if skip_batches else dataset
        elif not callable(train):
            raise TypeError("train must be a tf.data.Dataset or a function (epoch, "
                            "skip_batches) -> Dataset, got %r" % (train,))
        if not self._built:
            self._build(train(0, 0))
        self.history = {}
        # Observers first, so that a skipped checkpoint and a failed restore reach the run
        # log and status.
        observers = self._observers(callbacks)
        try:
            restored = self.restore(
                lambda message: notify(observers, "on_run_message", message)) \
                if resume else None
            if self.multi_worker and self._checkpoints is not None:
                self._check_same_restore(restored)
            self._fit_loop(train, epochs, validation, steps_per_epoch, restored, observers)
        except BaseException as err:
            lost = self._explain_peer_failure(err)
            notify(observers, "on_run_failure", lost or err)
            if lost is not None:
                raise lost from err
            raise
        finally:
            if self._checkpoints is not None:
                self._checkpoints.remove_scratch()
        return self.history

    def _observers(self, callbacks):
        """SIGTERM, progress and (on the chief) run-folder observers, then the caller's."""
        observers = [StopOnSignal()]
        if self.is_chief and self.verbose:
            observers.append(ProgressBar())
        if self.is_chief and self.run is not None:
            observers += run_folder_observers(self.run, self.probe, self.snapshot_every,
                                              finish=self.finish_run,
                                              attention_summaries=self.attention_summaries)
        observers += list(callbacks or [])
        counters = RunCounters(self.step, self.epoch, self.batch_in_epoch)
        for observer in observers:
            observer.set_model(self.model)
            if hasattr(observer, "set_counters"):
                observer.set_counters(counters)
        return observers

    def _explain_peer_failure(self, err):
        """A WorkerLostError for a collective op that failed because a peer is gone, else None."""
        if not self.multi_worker or not isinstance(err, _PEER_ERRORS):
            return None
        detail = (getattr(err, "message", None) or str(err)).strip().splitlines()
        return WorkerLostError(
            "lost contact with another worker at step %d (a worker died, was stopped, or the "
            "network between them failed): %s. This worker stops too. Relaunch the same "
            "`attnlab launch` command on every worker to resume from the last checkpoint."
            % (int(self.step.numpy()), detail[0] if detail else type(err).__name__))

    def _check_finite(self, epoch_start_step, epoch, observers):
        """Raise (nan_policy="stop") or report (skip) the first non-finite step since the last
        check; the bad update was not applied."""
        bad = int(self.first_bad_step.numpy())
        if not bad:
            return
        where = "step %d (epoch %d, batch %d)" % (bad, epoch + 1, bad - epoch_start_step)
        if self.nan_policy == "stop":
            # Later steps computed but applied nothing: report the bad step as the last one.
            self.step.assign(bad)
            raise NonFiniteLossError(
                "non-finite loss or gradient at %s; the update was not applied. Lower the "
                "learning rate, clip gradients (clip_norm) or use nan_policy='skip'." % where)
        notify(observers, "on_run_message", "skipped %s: non-finite loss or gradient (%d "
               "skipped so far)" % (where, int(self.skipped_steps.numpy())))
        self.first_bad_step.assign(0)

    def _fit_loop(self, train, epochs, validation, steps_per_epoch, restored, observers):
        self.completed = False
        self.model.stop_training = False
        if restored:
            notify(observers, "on_run_resume", restored)
        self._set_params(observers, epochs, steps_per_epoch)
        notify(observers, "on_train_begin", None)
        for epoch in range(int(self.epoch.numpy()), epochs):
            if not self._train_epoch(epoch, train, epochs, steps_per_epoch, observers):
                self.save()
                notify(observers, "on_train_end", None)
                return
            logs = self._epoch_logs(validation)
            self.epoch.assign(epoch + 1)
            self.batch_in_epoch.assign(0)
            for key, value in logs.items():
                self.history.setdefault(key, []).append(value)
            self.save()
            notify(observers, "on_epoch_end", epoch, logs)
        if not self.history and int(self.epoch.numpy()) > 0:
            # Restored after the last epoch (a kill before the caller wrote its final
            # metrics): give the last epoch's logs again, as an uninterrupted run would.
            self.history = {k: [v] for k, v in self._epoch_logs(validation).items()}
            notify(observers, "on_run_message", "training was already complete at step %d; "
                   "final epoch metrics recomputed" % int(self.step.numpy()))
        self.completed = True
        self.model.stop_training = False  # a request after the last step changes nothing
        notify(observers, "on_train_end", None)

    def _epoch_logs(self, validation):
        """The logs of the epoch just trained (or restored: a checkpoint holds the train
        metrics as they were at the epoch end, and validation is evaluated again)."""
        logs = self._results()
        if validation is not None:
            logs.update(self.evaluate(validation))
        logs["learning_rate"] = self._learning_rate()
        return logs

    def _set_params(self, observers, epochs, steps):
        for observer in observers:
            observer.set_params({"epochs": epochs, "steps": steps, "verbose": self.verbose})

    def _train_epoch(self, epoch, train, epochs, steps_per_epoch, observers):
        """Train the rest of `epoch`; False when a stop request ended it early."""
        skip = int(self.batch_in_epoch.numpy())
        if skip == 0:
            for metric in [self.loss_metric] + self.metrics:
                metric.reset_state()
        dataset = train(epoch, skip)
        cardinality = int(dataset.cardinality().numpy())
        target = steps_per_epoch
        if target is None and cardinality >= 0:
            target = cardinality + skip
        self._set_params(observers, epochs, target)
        notify(observers, "on_epoch_begin", epoch, None)
        epoch_start_step = int(self.step.numpy()) - skip
        step = epoch_start_step + skip
        last_sync = time.time()
        loss = None
        iterator = iter(self._distribute(dataset))
        # One trace lookup per epoch: the concrete function is then called directly,
        # which skips the tf.function dispatch (argument hashing) on every step.
        train_step = self._train_step.get_concrete_function(iterator)
        # With a known number of batches the loop stops without running into the
        # end of the data inside the graph (an OutOfRangeError); otherwise it does.
        remaining = cardinality if self._count_batches(cardinality) else None
        while remaining is None or remaining > 0:
            try:
                loss = train_step(iterator)
            except tf.errors.OutOfRangeError:
                break
            if remaining is not None:
                remaining -= 1
            step += 1
            # Read device values (a host sync) only now and then, before a checkpoint
            # and at the end of the epoch, so that steps run back to back.
            due = self.checkpoint_every and step % self.checkpoint_every == 0
            stop = self.model.stop_training
            if self.multi_worker:
                # All workers stop after the same step, or the saves would not pair up.
                stop = step % STOP_CHECK_STEPS == 0 and self._workers_sum([float(stop)])[0] > 0
            if due or stop or time.time() - last_sync > 0.5:
                self._sync(epoch_start_step, epoch, step, loss, observers)
                last_sync = time.time()
            if due:
                self.save()
            if stop:
                self.model.stop_training = True  # also on a worker that agreed to a peer's
                return False
        self._sync(epoch_start_step, epoch, step, loss, observers)
        return True

    def _sync(self, epoch_start_step, epoch, step, loss, observers):
        """Check the steps so far for non-finite values and report the last step's loss."""
        self._check_finite(epoch_start_step, epoch, observers)
        if loss is not None:
            # The step's global loss, not the metric: reading a synced metric is a collective
            # op that every worker would have to run in step.
            notify(observers, "on_train_batch_end", step - epoch_start_step - 1,
                   {"loss": float(loss.numpy())})
