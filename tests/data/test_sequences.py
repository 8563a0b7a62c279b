"""Copy / reverse / sort tasks: targets follow the operation; seeded, disjoint splits."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.data.sequences import make_sequence_task

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
