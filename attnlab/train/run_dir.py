"""The run folder runs/NAME/: the contract between background training and the notebooks.

The Trainer writes checkpoints/; the observers of attnlab.train.observers write the rest
(RunLog, RunStatus, TensorBoardScalars, AttentionSnapshots), under Trainer.fit or model.fit.

Layout::

    runs/NAME/
        config.yaml     the resolved config (every default filled in)
        train.log       one human-readable line per epoch (and start / stop / failure lines)
        output.log      stdout and stderr of a detached run (progress bar, tracebacks)
        status.json     {"state": running|finished|failed|stopped, "pid", "epoch", "step",
                         "metrics", "error", "updated"}; replaced atomically
        metrics.json    final metrics (validation and test), written once at the end
        checkpoints/    tf.train.CheckpointManager files
        tb/             TensorBoard event files
        attention/      attention snapshots (attnlab.viz.snapshots)
"""
import json
import os
import tempfile
import time

from attnlab.validation import check_choice

STATES = ("created", "running", "finished", "failed", "stopped")


def atomic_write_text(path, text):
    """Write `text` to `path` so that readers see the old or the new file, never half."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class RunDir:
    """Paths and writers of one run folder.

    Args:
        path: the run folder (created with its subfolders).

    Example:
        >>> run = RunDir("runs/demo")
        >>> run.write_status("running", epoch=0)
    """

    def __init__(self, path):
        self.path = os.path.abspath(path)
        self.name = os.path.basename(self.path)
        for sub in ("", "checkpoints", "tb", "attention"):
            os.makedirs(os.path.join(self.path, sub), exist_ok=True)

    def file(self, name):
        return os.path.join(self.path, name)

    @property
    def checkpoint_dir(self):
        return self.file("checkpoints")

    @property
    def tensorboard_dir(self):
        return self.file("tb")

    def read_status(self):
        return read_status(self.path)

    def write_status(self, state, **fields):
        """Replace status.json with `state` and `fields` merged into the previous status."""
        check_choice("state", state, STATES)
        status = self.read_status() or {}
        status.update(fields)
        status.update({"state": state, "updated": time.time()})
        atomic_write_text(self.file("status.json"), json.dumps(status, indent=1, default=float))
        return status

    def log(self, line):
        """Append one line to train.log (flushed at once, so `attnlab logs -f` sees it)."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.file("train.log"), "a", encoding="utf-8") as f:
            f.write("%s %s\n" % (stamp, line))

    def write_metrics(self, metrics):
        atomic_write_text(self.file("metrics.json"), json.dumps(metrics, indent=1,
                                                                default=float))


def read_status(path):
    """The status.json of the run folder `path`, or None when there is none yet (or it is
    damaged: see `load_status` to tell the two apart)."""
    return load_status(path)[0]


def load_status(path):
    """(status, problem) of the run folder `path`.

    Returns:
        (dict, None) for a readable status.json; (None, None) when there is none;
        (None, "status.json ...: what is wrong") when it exists but cannot be used
        (not UTF-8, not JSON, not a mapping, no valid state).

    Example:
        >>> status, problem = load_status("runs/demo")
    """
    file = os.path.join(path, "status.json")
    if not os.path.exists(file):
        return None, None
    try:
        with open(file, encoding="utf-8") as f:
            status = json.load(f)
    except UnicodeDecodeError:
        return None, "damaged status.json: not UTF-8 text"
    except ValueError as err:  # json.JSONDecodeError
        return None, "damaged status.json: not JSON (%s)" % err
    except OSError as err:
        return None, "cannot read status.json: %s" % (err.strerror or err)
    if not isinstance(status, dict):
        return None, "damaged status.json: expected a JSON object, got %s" % (
            type(status).__name__)
    if status.get("state") not in STATES:
        return None, "damaged status.json: unknown state %r" % (status.get("state"),)
    return status, None
