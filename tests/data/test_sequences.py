"""Copy / reverse / sort tasks, trigger classification, digits and the tf.data pipelines."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.data import make_task
from attnlab.data.sequences import make_sequence_task
from attnlab.data.trigger import make_trigger

SMALL = dict(n_train=60, n_val=10, n_test=10)


def _rows(x):
    return {tuple(int(v) for v in row if v) for row in x}


@pytest.mark.parametrize("operation,reference", [
    ("copy", lambda s: s), ("reverse", lambda s: s[::-1]), ("sort", sorted)])
def test_targets_follow_the_operation(operation, reference):
    task = make_sequence_task(operation, seed=2, num_symbols=5, min_length=2, max_length=6,
                              **SMALL)
    x, y, w = task.arrays("train")
    vocab = task.source_vocab
    for i in range(len(y)):
        source = vocab.decode(x["source"][i])
        assert 2 <= len(source) <= 6
        assert vocab.decode(y[i]) == list(reference(source))
        assert y[i, len(source)] == vocab.eos_id


@settings(max_examples=10)
@given(seed=st.integers(0, 2 ** 31 - 1), operation=st.sampled_from(["copy", "reverse", "sort"]))
def test_splits_are_disjoint_and_seeded(seed, operation):
    task = make_sequence_task(operation, seed=seed, num_symbols=4, min_length=2, max_length=5,
                              **SMALL)
    train, val, test = (_rows(task.arrays(s)[0]["source"]) for s in ("train", "validation",
                                                                      "test"))
    assert len(train) == 60 and len(val) == 10 and len(test) == 10
    assert not (train & val) and not (train & test) and not (val & test)
    again = make_sequence_task(operation, seed=seed, num_symbols=4, min_length=2, max_length=5,
                               **SMALL)
    np.testing.assert_array_equal(task.arrays("test")[1], again.arrays("test")[1])


def test_trigger_labels_come_from_the_trigger_tokens():
    task = make_trigger(seed=1, num_classes=3, num_filler=10, min_length=5, max_length=9,
                        max_triggers=3, **SMALL)
    vocab = task.source_vocab
    for split in ("train", "validation", "test"):
        x, y, _ = task.arrays(split)
        mask = task.meta[split]["trigger_mask"]
        for row, label, row_mask in zip(x, y, mask):
            tokens = [vocab.tokens[i] for i in row]
            triggers = [i for i, t in enumerate(tokens) if t.startswith("T")]
            assert triggers == list(np.flatnonzero(row_mask))
            assert 1 <= len(triggers) <= 3
            assert {tokens[i] for i in triggers} == {"T%d" % label}
    assert _rows(task.arrays("train")[0]).isdisjoint(_rows(task.arrays("test")[0]))
    again = make_trigger(seed=1, num_classes=3, num_filler=10, min_length=5, max_length=9,
                         max_triggers=3, **SMALL)
    np.testing.assert_array_equal(task.arrays("train")[0], again.arrays("train")[0])


def test_digits_splits_are_seeded_and_disjoint():
    task = make_task("digits", seed=0)
    sizes = [task.size(s) for s in ("train", "validation", "test")]
    assert sum(sizes) == 1797
    x, y, _ = task.arrays("train")
    assert x.shape[1:] == (8, 8, 1) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0 and set(np.unique(y)) == set(range(10))
    idx = [set(task.meta[s]["index"].tolist()) for s in ("train", "validation", "test")]
    assert not (idx[0] & idx[1]) and not (idx[0] & idx[2]) and not (idx[1] & idx[2])
    np.testing.assert_array_equal(make_task("digits", seed=0).arrays("test")[1],
                                  task.arrays("test")[1])


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
    with pytest.raises(ValueError, match=r"max_triggers \(4\) must be <= min_length \(3\)"):
        make_trigger(min_length=3, max_triggers=4)
    task = make_sequence_task("copy", **SMALL)
    with pytest.raises(ValueError, match="split must be one of .* got 'dev'"):
        task.dataset("dev", 4)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        task.dataset("train", 0)
