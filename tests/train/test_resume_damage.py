"""`attnlab train --resume` after SIGKILLs at the worst moments and with damaged checkpoints:
the run still finishes, with the metrics.json of an uninterrupted run."""
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from attnlab.train.checkpoints import PAUSE_ENV
from tests.train.test_resume import _wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# 2 epochs x 4 steps, deterministic ops: seconds. Checkpoints 3 and 6 inside the epochs,
# 4 and 8 at their ends (a checkpoint every 2 steps would save step 8 twice, the epoch's
# end overwriting the last batch's); all 4 kept.
CONFIG = """\
task: {name: trigger, seed: 0, n_train: 128, n_val: 32, n_test: 32, num_classes: 4,
       num_filler: 20, min_length: 6, max_length: 10, max_triggers: 2}
model: {name: classifier, attention: custom, embed_dim: 16, pooling: mean}
train: {epochs: 2, batch_size: 32, learning_rate: 0.003, seed: 0, checkpoint_every: 3,
        keep_checkpoints: 4, deterministic: true, verbose: 0}
eval: {probe_size: 2}
"""


def _start(folder, *args, pause_after=None):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", PYTHONHASHSEED="0",
               CUDA_VISIBLE_DEVICES="")
    env.pop(PAUSE_ENV, None)
    if pause_after is not None:
        env[PAUSE_ENV] = str(pause_after)
    command = [sys.executable, "-m", "attnlab", "train", str(folder / "run.yaml"),
               "--runs-dir", str(folder / "runs")] + list(args)
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def _finish(proc, code=0, timeout=240):
    output = proc.communicate(timeout=timeout)[0].decode(errors="replace")
    assert proc.returncode == code, output[-3000:]
    return output


def _kill_when_paused(proc, checkpoints, step):
    """SIGKILL `proc` held by the test hook right after checkpoint `step` is complete."""
    _wait_for(str(checkpoints / ("paused-at-%d" % step)), proc, timeout=180)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _metrics(run):
    with open(str(run / "metrics.json")) as f:
        return json.load(f)


def _assert_same_metrics(resumed, uninterrupted):
    assert sorted(resumed) == sorted(uninterrupted)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
        assert key in resumed
    for key, value in uninterrupted.items():
        if key != "train_seconds":  # wall time differs
            assert resumed[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One uninterrupted run: its folder and metrics, copied by each test that damages it."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    (folder / "run.yaml").write_text(CONFIG)
    _finish(_start(folder, "--name", "run"))
    run = folder / "runs" / "run"
    assert sorted(n for n in os.listdir(str(run / "checkpoints")) if n.endswith(".index")) \
        == ["ckpt-3.index", "ckpt-4.index", "ckpt-6.index", "ckpt-8.index"]
    return run, _metrics(run)


def _copy(finished, tmp_path):
    (tmp_path / "run.yaml").write_text(CONFIG)
    run = tmp_path / "runs" / "run"
    shutil.copytree(str(finished[0]), str(run))
    os.remove(str(run / "metrics.json"))
    return run


@pytest.mark.slow
def test_kills_after_the_first_and_the_last_checkpoint_then_resume_gives_full_metrics(
        tmp_path, finished):
    (tmp_path / "run.yaml").write_text(CONFIG)
    run = tmp_path / "runs" / "run"
    checkpoints = run / "checkpoints"
    # Killed just after the first checkpoint...
    _kill_when_paused(_start(tmp_path, "--name", "run", pause_after=3), checkpoints, 3)
    assert '"ckpt-3"' in (checkpoints / "checkpoint").read_text()
    # ...then, resumed, just after the last one: training done, metrics.json not written.
    _kill_when_paused(_start(tmp_path, "--name", "run", "--resume", pause_after=8),
                      checkpoints, 8)
    assert '"ckpt-8"' in (checkpoints / "checkpoint").read_text()
    assert not (run / "metrics.json").exists()
    _finish(_start(tmp_path, "--name", "run", "--resume"))
    log = (run / "train.log").read_text()
    assert "resumed from ckpt-3 at step 3" in log and "resumed from ckpt-8 at step 8" in log
    assert "training was already complete at step 8" in log
    _assert_same_metrics(_metrics(run), finished[1])
    assert json.loads((run / "status.json").read_text())["state"] == "finished"


def _truncate_data(path):
    with open(path + ".data-00000-of-00001", "r+b") as f:
        f.truncate(f.seek(0, os.SEEK_END) // 2)  # a copy cut short


def _delete_index(path):
    os.remove(path + ".index")


def _garbage_index(path):
    with open(path + ".index", "wb") as f:
        f.write(b"not a checkpoint index" * 10)


@pytest.mark.slow
@pytest.mark.parametrize("damage", [_truncate_data, _delete_index, _garbage_index],
                         ids=["truncated-data", "missing-index", "garbage-index"])
def test_a_damaged_newest_checkpoint_is_skipped_for_the_previous_one(damage, tmp_path,
                                                                     finished):
    run = _copy(finished, tmp_path)
    damage(str(run / "checkpoints" / "ckpt-8"))
    _finish(_start(tmp_path, "--name", "run", "--resume"))
    log = (run / "train.log").read_text()
    skipped = [line for line in log.splitlines() if "skipped checkpoint" in line]
    assert len(skipped) == 1 and "skipped checkpoint ckpt-8" in skipped[0], log
    assert "resumed from ckpt-6 at step 6 (epoch 2, 2 batches done)" in log
    _assert_same_metrics(_metrics(run), finished[1])


@pytest.mark.slow
def test_no_restorable_checkpoint_fails_with_a_message_naming_run_and_checkpoints(
        tmp_path, finished):
    run = _copy(finished, tmp_path)
    for step in (3, 4, 6, 8):
        (_truncate_data if step % 2 else _delete_index)(str(run / "checkpoints" /
                                                             ("ckpt-%d" % step)))
    output = _finish(_start(tmp_path, "--name", "run", "--resume"), code=1)
    assert "Traceback" not in output, output
    assert "run run:" in output and str(run / "checkpoints") in output, output
    for step in (3, 4, 6, 8):
        assert "ckpt-%d (" % step in output, output
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and "CheckpointRestoreError" in status["error"]
    assert (run / "train.log").read_text().count("skipped checkpoint") == 4
