"""TrainingCheckpoints: the Trainer's exact-resume state in a run's checkpoints folder."""
import os
import re
import shutil
import tempfile
import time

import tensorflow as tf

# What restoring a damaged checkpoint raises: TensorFlow's errors (DataLossError,
# NotFoundError...), IndexError for a data file cut short, ValueError / AssertionError for
# objects that do not match, OSError from the file system.
RESTORE_ERRORS = (tf.errors.OpError, AssertionError, IndexError, KeyError, ValueError,
                  OSError)


class CheckpointRestoreError(RuntimeError):
    """Every checkpoint of a run failed to restore (the message names each and why)."""


# Test hook: "STEP" holds the process right after checkpoint STEP is complete (index
# written), with a file `paused-at-STEP` in the checkpoints folder, so that a test can
# SIGKILL it at that exact moment (e.g. between the last checkpoint and metrics.json).
PAUSE_ENV = "ATTNLAB_TEST_PAUSE_AFTER_CHECKPOINT"


def _pause_if_asked(directory, step):
    if os.environ.get(PAUSE_ENV, "") != str(step):
        return
    with open(os.path.join(directory, "paused-at-%d" % step), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(600)


def _checkpoint_paths(directory):
    """The checkpoints of `directory`, oldest first, as its state file lists them; with that
    file lost or garbage (TensorFlow then reports none), the ckpt-N files found."""
    if not os.path.isdir(directory):
        return []
    try:
        state = tf.train.get_checkpoint_state(directory)
    except ValueError:  # a state file without model_checkpoint_path
        state = None
    if state is not None and state.all_model_checkpoint_paths:
        return list(state.all_model_checkpoint_paths)
    # Else a resume would silently start over and overwrite the run.
    numbers = sorted(int(m.group(1)) for m in (re.match(r"ckpt-(\d+)\.index$", name)
                                               for name in os.listdir(directory)) if m)
    return [os.path.join(directory, "ckpt-%d" % n) for n in numbers]


def _first_line(err):
    text = (getattr(err, "message", None) or str(err)).strip()
    return text.splitlines()[0] if text else "no message"


class TrainingCheckpoints:
    """Saves and restores a tf.train.Checkpoint with a CheckpointManager.

    A save writes the data files, then the index (CheckpointManager), so a kill mid-save
    leaves the previous checkpoint the latest. Every worker of a multi-worker run must take
    part in each save, but only the chief's files are kept: the others save into a scratch
    folder and restore from the chief's.

    Args:
        checkpoint: the tf.train.Checkpoint of everything exact resume needs.
        directory: the run's checkpoints folder.
        keep: checkpoints kept.
        is_chief: False saves into a scratch folder instead of `directory`.
        restore_from: checkpoints folder to restore from (default: `directory`).

    Example:
        >>> saver = TrainingCheckpoints(tf.train.Checkpoint(model=model),
        ...                             "runs/demo/checkpoints")
        >>> saver.save(step=100)
    """

    def __init__(self, checkpoint, directory, keep=3, is_chief=True, restore_from=None):
        self.checkpoint = checkpoint
        self.directory = directory
        self.restore_from = restore_from or directory
        self.scratch = None if is_chief else tempfile.mkdtemp(prefix="attnlab-worker-ckpt-")
        self.manager = tf.train.CheckpointManager(checkpoint, self.scratch or directory,
                                                  max_to_keep=keep)

    def save(self, step):
        """Write checkpoint number `step`; returns its path."""
        if self.scratch:
            os.makedirs(self.scratch, exist_ok=True)  # removed after each fit
        path = self.manager.save(checkpoint_number=step)
        _pause_if_asked(self.scratch or self.directory, step)
        return path

    def restore(self, on_skip=None):
        """Restore the latest loadable checkpoint; returns its path or None.

        A checkpoint that fails to load (a data file cut short or missing, a missing or
        garbage index, flipped bytes) is passed over for the one before it.

        Args:
            on_skip: optional function (message) told about each checkpoint passed over.

        Raises:
            CheckpointRestoreError: there are checkpoints, but none could be restored.
        """
        directory = self.restore_from
        paths = _checkpoint_paths(directory)
        errors = []
        for path in reversed(paths):
            try:
                self.checkpoint.restore(path).assert_existing_objects_matched()
                return path
            except RESTORE_ERRORS as err:
                # IndexError: a data file cut short ("Read less bytes than requested").
                reason = "%s: %s" % (type(err).__name__, _first_line(err))
                errors.append("%s (%s)" % (os.path.basename(path), reason))
                if on_skip is not None:
                    on_skip("skipped checkpoint %s, it cannot be restored (%s)"
                            % (os.path.basename(path), reason))
        if errors:
            raise CheckpointRestoreError(
                "no checkpoint of %s could be restored; tried, newest first: %s"
                % (directory, "; ".join(errors)))
        return None

    def remove_scratch(self):
        """Delete a non-chief worker's scratch checkpoints (recreated by the next save)."""
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)
