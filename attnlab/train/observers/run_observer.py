"""RunObserver: a Keras callback that also hears the run events Keras has no hook for."""
import collections

import tensorflow as tf

RunCounters = collections.namedtuple("RunCounters", ["step", "epoch", "batch_in_epoch"])
RunCounters.__doc__ = """The Trainer's progress variables, which observers read.

    step: global step (tf.Variable); epoch: epochs done; batch_in_epoch: batches done in the
    current epoch. Under `model.fit` there are none: observers use `optimizer.iterations`.
    """


class RunObserver(tf.keras.callbacks.Callback):
    """A tf.keras callback for run-folder I/O, usable in `Trainer.fit` and in `model.fit`.

    Keras calls the train, epoch and batch hooks; a stop (SIGTERM, `attnlab stop`, any
    callback that sets `model.stop_training`) shows in `on_train_end` as
    `self.model.stop_training`. The Trainer also calls three hooks Keras has not:

    - `on_run_resume(checkpoint_path)`: before `on_train_begin` when the run continues
      from a checkpoint;
    - `on_run_message(message)`: a line worth keeping (a skipped non-finite step);
    - `on_run_failure(error)`: training raised `error` (`on_train_end` is not called).

    Under `model.fit`, `fit_observed` reports a failure; the other two never come.

    Example:
        >>> class EpochCounter(RunObserver):
        ...     def on_epoch_end(self, epoch, logs=None):
        ...         print("epoch", epoch + 1, "step", self.global_step)
    """

    def __init__(self):
        super().__init__()
        self.counters = None

    def set_counters(self, counters):
        """Read step and epoch from `counters` (a RunCounters) instead of the optimizer."""
        self.counters = counters

    @property
    def global_step(self):
        """Steps trained so far (with the Trainer: skipped non-finite steps count too)."""
        if self.counters is not None:
            return int(self.counters.step.numpy())
        return int(self.model.optimizer.iterations.numpy())

    @property
    def epochs_done(self):
        """Epochs completed before the current one (0 under `model.fit`)."""
        return int(self.counters.epoch.numpy()) if self.counters is not None else 0

    @property
    def batches_done(self):
        """Batches of the current epoch already trained (a run resumed inside an epoch)."""
        return int(self.counters.batch_in_epoch.numpy()) if self.counters is not None else 0

    def on_run_resume(self, checkpoint_path):
        pass

    def on_run_message(self, message):
        pass

    def on_run_failure(self, error):
        pass


def notify(observers, hook, *args):
    """Call `hook` on every observer that has it (plain Keras callbacks lack the run hooks)."""
    for observer in observers:
        method = getattr(observer, hook, None)
        if method is not None:
            method(*args)


def fit_observed(model, *args, callbacks=None, **kwargs):
    """`model.fit(*args, callbacks=callbacks, **kwargs)` that reports a failure to observers.

    Args:
        model: a compiled tf.keras.Model.
        *args, **kwargs: the arguments of `model.fit`.
        callbacks: Keras callbacks and RunObservers (e.g. `run_folder_observers(run)`).

    Returns:
        The History of `model.fit`.

    Example:
        >>> fit_observed(model, data, epochs=3, verbose=0,
        ...              callbacks=run_folder_observers(RunDir("runs/fit")))
    """
    callbacks = list(callbacks or [])
    try:
        return model.fit(*args, callbacks=callbacks, **kwargs)
    except BaseException as err:
        notify(callbacks, "on_run_failure", err)
        raise
