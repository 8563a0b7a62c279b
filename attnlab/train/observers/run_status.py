"""RunStatus: the status.json that `attnlab runs` and watching notebooks poll."""
import os

from attnlab.train.observers.run_observer import RunObserver


class RunStatus(RunObserver):
    """Keeps RUN/status.json current: running (with the last epoch's metrics), then
    finished, stopped or failed, with the process id, epoch and step.

    Args:
        run: the RunDir to write.
        finish: write "finished" when training ends; False when the caller still has work
            to do first (the runner's final test evaluation), so that a watcher never sees
            "finished" before the final metrics exist.

    Example:
        >>> model.fit(data, epochs=3, callbacks=[RunStatus(RunDir("runs/demo"))])
    """

    def __init__(self, run, finish=True):
        super().__init__()
        self.run = run
        self.finish = finish
        self._epoch = 0

    def _write(self, state, **fields):
        self.run.write_status(state, pid=os.getpid(), epoch=self._epoch,
                              step=self.global_step, **fields)

    def on_train_begin(self, logs=None):
        self._epoch = self.epochs_done
        self._write("running", error=None)

    def on_epoch_end(self, epoch, logs=None):
        self._epoch = epoch + 1
        self._write("running", metrics=dict(logs or {}))

    def on_train_end(self, logs=None):
        if self.model.stop_training:
            self._write("stopped")
        elif self.finish:
            self._write("finished")

    def on_run_failure(self, error):
        self.run.write_status("failed", error="%s: %s" % (type(error).__name__, error),
                              pid=os.getpid(), step=self.global_step)
