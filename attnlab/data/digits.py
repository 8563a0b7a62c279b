"""scikit-learn's bundled 8x8 digits images: a small real data set, offline."""
import numpy as np

from attnlab.data.task import Task, check_seed


def make_digits(seed=0, val_fraction=0.1, test_fraction=0.2):
    """The 1,797 handwritten digits shipped inside scikit-learn, split by a seeded shuffle.

    scikit-learn is an optional dependency, imported only here.

    Args:
        seed: shuffle seed; the same seed gives the same splits.
        val_fraction, test_fraction: fractions of the images in the validation / test split.

    Returns:
        Task of kind "image_classification": x = float32 images (N, 8, 8, 1) in [0, 1],
        y = labels (N,) in 0..9.
    """
    check_seed(seed)
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        # NaN (compares false), strings and bools are refused too, by name.
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not 0.0 < value < 1.0:
            raise ValueError("%s must be in (0, 1), got %r" % (name, value))
    if val_fraction + test_fraction >= 1.0:
        raise ValueError("val_fraction + test_fraction must be < 1, got %r"
                         % (val_fraction + test_fraction))
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the digits task needs scikit-learn (pip install scikit-learn)") \
            from err
    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[..., np.newaxis]
    labels = bunch.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = int(round(len(labels) * test_fraction))
    n_val = int(round(len(labels) * val_fraction))
    parts = {"test": order[:n_test], "validation": order[n_test:n_test + n_val],
             "train": order[n_test + n_val:]}
    splits = {s: {"x": images[idx], "y": labels[idx]} for s, idx in parts.items()}
    meta = {s: {"index": idx} for s, idx in parts.items()}
    return Task("digits", "image_classification", splits, num_classes=10, meta=meta)
