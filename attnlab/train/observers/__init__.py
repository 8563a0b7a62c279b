"""Run observers: Keras callbacks that write the run folder, for Trainer.fit and model.fit.

    run_observer          RunObserver (the extra run hooks), RunCounters, fit_observed
    run_folder            run_folder_observers(run, probe=...): the run folder's writers
    run_log, run_status   train.log, status.json
    tensorboard           TensorBoardScalars (RUN/tb)
    attention_snapshots   AttentionSnapshots (RUN/attention)
    attention_summaries   AttentionSummaries (probe attention images and head metrics, RUN/tb)
    progress              ProgressBar (terminal / output.log)
    stop_on_signal        StopOnSignal (SIGTERM -> model.stop_training)
"""
from attnlab.train.observers.attention_snapshots import AttentionSnapshots
from attnlab.train.observers.attention_summaries import AttentionSummaries
from attnlab.train.observers.progress import ProgressBar
from attnlab.train.observers.run_folder import run_folder_observers
from attnlab.train.observers.run_log import RunLog
from attnlab.train.observers.run_observer import RunCounters, RunObserver, fit_observed
from attnlab.train.observers.run_status import RunStatus
from attnlab.train.observers.stop_on_signal import StopOnSignal
from attnlab.train.observers.tensorboard import TensorBoardScalars

__all__ = ["AttentionSnapshots", "AttentionSummaries", "ProgressBar", "RunCounters",
           "RunLog", "RunObserver", "RunStatus", "StopOnSignal", "TensorBoardScalars",
           "fit_observed", "run_folder_observers"]
