"""scikit-learn digits: seeded, disjoint splits of the bundled images."""
import numpy as np
import pytest

from attnlab.data import make_task
from attnlab.data.digits import make_digits


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


def test_bad_fractions_name_the_value():
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\), got 1.5"):
        make_digits(test_fraction=1.5)
    with pytest.raises(ValueError, match="val_fraction \\+ test_fraction must be < 1, got 1.1"):
        make_digits(val_fraction=0.5, test_fraction=0.6)
