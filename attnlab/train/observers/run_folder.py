"""The observers that write a run folder, in the order they must run."""
from attnlab.train.observers.attention_snapshots import AttentionSnapshots, ProbePass
from attnlab.train.observers.attention_summaries import AttentionSummaries
from attnlab.train.observers.run_log import RunLog
from attnlab.train.observers.run_status import RunStatus
from attnlab.train.observers.tensorboard import TensorBoardScalars
from attnlab.train.run_dir import RunDir


def run_folder_observers(run, probe=None, snapshot_every=1, finish=True,
                         attention_summaries=True):
    """TensorBoard scalars, train.log, attention snapshots and status.json for `run`.

    Status comes last, so that "running" with an epoch's metrics means the rest of that
    epoch's files are written. Checkpoints are the Trainer's (exact resume); under
    `model.fit` add tf.keras.callbacks.BackupAndRestore or ModelCheckpoint.

    Args:
        run: a RunDir or a run folder path.
        probe: optional (x, query_tokens, key_tokens) whose attention is snapshotted.
        snapshot_every: epochs between snapshots (None: only before training).
        finish: mark the run "finished" at the end (see RunStatus).
        attention_summaries: with a probe, also write its attention images and head
            metrics to TensorBoard when snapshotting (AttentionSummaries).

    Returns:
        A list of RunObservers for `Trainer.fit(callbacks=...)` or `model.fit`.

    Example:
        >>> fit_observed(model, data, epochs=3, verbose=0,
        ...              callbacks=run_folder_observers("runs/fit", probe=probe))
    """
    if not isinstance(attention_summaries, bool):
        raise TypeError("attention_summaries must be a bool, got %r" % (attention_summaries,))
    run = run if isinstance(run, RunDir) else RunDir(run)
    scalars = TensorBoardScalars(run.tensorboard_dir)
    observers = [scalars, RunLog(run)]
    if probe is not None:
        shared = ProbePass(probe)  # one probe pass per step for snapshots and summaries
        observers.append(AttentionSnapshots(run.path, probe, snapshot_every, shared))
        if attention_summaries:
            observers.append(AttentionSummaries(scalars, probe, snapshot_every,
                                                probe_pass=shared))
    observers.append(RunStatus(run, finish=finish))
    return observers
