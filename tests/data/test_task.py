"""Task pipelines: per-(seed, epoch) order, resume by skipping batches; the task registry."""
import numpy as np
import pytest

from attnlab.data import make_task
from attnlab.data.sequences import make_sequence_task

SMALL = dict(n_train=60, n_val=10, n_test=10)


def _rows(x):
    return {tuple(int(v) for v in row if v) for row in x}


def test_epoch_order_is_a_function_of_seed_and_epoch_and_skip_resumes():
    task = make_sequence_task("copy", seed=0, num_symbols=6, min_length=2, max_length=4, **SMALL)

    def batches(**kw):
        return [b[1].numpy() for b in task.dataset("train", 8, shuffle=True, **kw)]

    first = batches(seed=1, epoch=0)
    assert all(np.array_equal(a, b) for a, b in zip(first, batches(seed=1, epoch=0)))
    assert not np.array_equal(np.concatenate(first), np.concatenate(batches(seed=1, epoch=1)))
    resumed = batches(seed=1, epoch=0, skip_batches=3)
    assert len(resumed) == len(first) - 3
    assert all(np.array_equal(a, b) for a, b in zip(first[3:], resumed))
    # Every example exactly once per epoch.
    assert _rows(np.concatenate(first)) == _rows(task.arrays("train")[1])


def test_bad_task_arguments_name_the_value():
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        make_task("nope")
    with pytest.raises(ValueError, match="operation must be one of .* got 'shuffle'"):
        make_sequence_task("shuffle")
    with pytest.raises(ValueError, match=r"min_length \(5\) must be <= max_length \(3\)"):
        make_sequence_task("copy", min_length=5, max_length=3)
    with pytest.raises(ValueError, match="only 6 exist"):
        make_sequence_task("copy", num_symbols=2, min_length=1, max_length=2, n_train=5,
                           n_val=1, n_test=1)
    task = make_sequence_task("copy", **SMALL)
    with pytest.raises(ValueError, match="split must be one of .* got 'dev'"):
        task.dataset("dev", 4)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        task.dataset("train", 0)
