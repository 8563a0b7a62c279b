"""StopOnSignal: SIGTERM (`attnlab stop`, `docker stop`) ends training after the current step."""
import signal
import threading

from attnlab.train.observers.run_observer import RunObserver


class StopOnSignal(RunObserver):
    """While training, a signal sets `model.stop_training`, as Keras' own early stops do.

    The Trainer then checkpoints and returns after the current step; `model.fit` ends the
    epoch early. The previous handler is back once training ends or fails. Outside the main
    thread (where Python cannot install handlers) it does nothing.

    Args:
        signum: the signal to catch.

    Example:
        >>> model.fit(data, epochs=5, callbacks=[StopOnSignal()])
    """

    def __init__(self, signum=signal.SIGTERM):
        super().__init__()
        self.signum = signum
        self._previous = None
        self._installed = False

    def _request_stop(self, *_):
        self.model.stop_training = True

    def on_train_begin(self, logs=None):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(self.signum, self._request_stop)
            self._installed = True

    def _restore(self):
        if self._installed:
            signal.signal(self.signum, self._previous)
            self._installed = False

    def on_train_end(self, logs=None):
        self._restore()

    def on_run_failure(self, error):
        self._restore()
