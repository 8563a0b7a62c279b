"""THE promise of the trainer: a run SIGKILLed at any moment resumes to the same weights."""
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(__file__), "resume_worker.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _start(run_dir, out, *extra):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", PYTHONHASHSEED="0",
               CUDA_VISIBLE_DEVICES="")
    return subprocess.Popen([sys.executable, WORKER, str(run_dir), str(out)] + list(extra),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _finish(proc, timeout=120):
    output, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, output.decode(errors="replace")[-3000:]


def _wait_for(path, proc, timeout=60):
    deadline = time.time() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, proc.communicate()[0].decode(errors="replace")[-3000:]
        assert time.time() < deadline, "timed out waiting for %s" % path
        time.sleep(0.02)


def _weights(path):
    with np.load(path) as data:
        return [data["arr_%d" % i] for i in range(len(data.files) - 2)], int(data["step"])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted")
    proc = _start(folder / "run", folder / "weights.npz")
    _finish(proc)
    return _weights(folder / "weights.npz")


def _assert_same(a, b):
    (wa, sa), (wb, sb) = a, b
    assert sa == sb == 60
    assert len(wa) == len(wb)
    for x, y in zip(wa, wb):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_weights(
        tmp_path, uninterrupted):
    run_dir, out = tmp_path / "run", tmp_path / "weights.npz"
    index = run_dir / "checkpoints" / "checkpoint"
    kills = 0
    for delay in random.Random(1234).sample([0.05, 0.15, 0.3, 0.5, 0.8], 3):
        proc = _start(run_dir, out)
        # Kill once training is under way: after the first (or a restored) checkpoint.
        _wait_for(str(index), proc)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        else:
            proc.communicate()
    assert kills >= 2, "the run finished before it could be killed; slow it down"
    if not out.exists():  # a resumed attempt may have finished the run before its delay
        _finish(_start(run_dir, out))
    _assert_same(_weights(out), uninterrupted)
    log = (run_dir / "train.log").read_text()
    assert "resumed from ckpt-" in log


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_write_leaves_a_loadable_latest(tmp_path, uninterrupted):
    run_dir, out = tmp_path / "run", tmp_path / "weights.npz"
    proc = _start(run_dir, out, "25")
    _wait_for(str(run_dir / "paused"), proc)
    # ckpt-25's files are written but the index still names ckpt-24.
    assert (run_dir / "checkpoints" / "ckpt-25.index").exists()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    index = (run_dir / "checkpoints" / "checkpoint").read_text()
    assert 'model_checkpoint_path: "ckpt-24"' in index
    _finish(_start(run_dir, out))
    log = (run_dir / "train.log").read_text()
    assert "resumed from ckpt-24 at step 24 (epoch 2, 4 batches done)" in log
    _assert_same(_weights(out), uninterrupted)
