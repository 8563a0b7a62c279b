"""Trigger-token classification: labels come from the triggers; seeded, disjoint splits."""
import numpy as np
import pytest

from attnlab.data.trigger import make_trigger

SMALL = dict(n_train=60, n_val=10, n_test=10)


def _rows(x):
    return {tuple(int(v) for v in row if v) for row in x}


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


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match=r"max_triggers \(4\) must be <= min_length \(3\)"):
        make_trigger(min_length=3, max_triggers=4)
    with pytest.raises(ValueError, match="num_classes must be a positive integer, got 0"):
        make_trigger(num_classes=0)
