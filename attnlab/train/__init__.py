"""Training: the custom-loop Trainer, run observers, schedules, run folders, configs, the CLI.

Exports are loaded on first use so that `attnlab runs|logs|stop` start without TensorFlow.
"""
import importlib

_EXPORTS = {
    "NoamSchedule": "attnlab.train.schedules",
    "WarmupCosine": "attnlab.train.schedules",
    "Trainer": "attnlab.train.trainer",
    "NonFiniteLossError": "attnlab.train.trainer",
    "RunDir": "attnlab.train.run_dir",
    "RunObserver": "attnlab.train.observers",
    "run_folder_observers": "attnlab.train.observers",
    "fit_observed": "attnlab.train.observers",
    "ScheduledSampling": "attnlab.train.scheduled_sampling",
    "load_config": "attnlab.train.config",
    "export_run": "attnlab.train.export",
    "validate_config": "attnlab.train.config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError("module 'attnlab.train' has no attribute %r" % name)


def __dir__():
    # The lazily loaded names too, so that tab completion offers them before first use.
    return sorted(set(globals()) | set(_EXPORTS))
