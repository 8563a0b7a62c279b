"""The `Task` container every synthetic data set returns, and its tf.data pipelines."""
import numpy as np
import tensorflow as tf

from attnlab.validation import check_choice, check_positive_int

SPLITS = ("train", "validation", "test")


class Task:
    """Train / validation / test arrays of one task, with its vocabularies.

    Arrays are kept in memory as NumPy so that each epoch's order is a pure function of
    (seed, epoch): a resumed run rebuilds the same pipeline and skips the batches it had
    already trained on, which tf.data iterator checkpoints do not give cheaply.

    Args:
        name: task name ("dates", "reverse", ...).
        kind: "seq2seq", "classification" or "image_classification".
        splits: {split: {"x": array or dict of arrays, "y": array, "weight": optional array}}.
        source_vocab: Vocabulary of the inputs (None for images).
        target_vocab: Vocabulary of seq2seq targets, else None.
        num_classes: number of labels for classification tasks.
        meta: {split: {name: array or list}} extra per-example data (raw strings, formats,
            trigger positions) for evaluation and tests.

    Example:
        >>> task = make_task("reverse", seed=0, n_train=64, n_val=16, n_test=16)
        >>> x, y, w = next(iter(task.dataset("train", batch_size=8)))
    """

    def __init__(self, name, kind, splits, source_vocab=None, target_vocab=None,
                 num_classes=None, meta=None):
        missing = [s for s in SPLITS if s not in splits]
        if missing:
            raise ValueError("Task %r lacks splits %s" % (name, missing))
        self.name = name
        self.kind = kind
        self.splits = splits
        self.source_vocab = source_vocab
        self.target_vocab = target_vocab
        self.num_classes = num_classes
        self.meta = meta or {s: {} for s in SPLITS}

    def size(self, split):
        return len(self.splits[split]["y"])

    def arrays(self, split):
        """(x, y, weight) NumPy arrays of a split; weight is None when there is none."""
        data = self.splits[split]
        return data["x"], data["y"], data.get("weight")

    def _select(self, split, order):
        x, y, w = self.arrays(split)
        x = {k: v[order] for k, v in x.items()} if isinstance(x, dict) else x[order]
        return x, y[order], (None if w is None else w[order])

    def dataset(self, split, batch_size, shuffle=False, seed=0, epoch=0,
                drop_remainder=False, skip_batches=0):
        """A batched tf.data.Dataset of (x, y) or (x, y, weight).

        Args:
            split: "train", "validation" or "test".
            batch_size: global batch size.
            shuffle: shuffle with a permutation drawn from (seed, epoch), so that the same
                epoch always has the same order.
            seed, epoch: the shuffle's seed and epoch.
            drop_remainder: drop the last partial batch (needed by tf.distribute).
            skip_batches: batches to skip at the start (to resume inside an epoch).
        """
        check_choice("split", split, SPLITS)
        check_positive_int("batch_size", batch_size)
        n = self.size(split)
        order = np.arange(n)
        if shuffle:
            order = np.random.default_rng([int(seed), int(epoch)]).permutation(n)
        x, y, w = self._select(split, order)
        items = (x, y) if w is None else (x, y, w)
        ds = tf.data.Dataset.from_tensor_slices(items).batch(batch_size,
                                                               drop_remainder=drop_remainder)
        if skip_batches:
            ds = ds.skip(skip_batches)
        return ds.prefetch(2)

    def train_fn(self, batch_size, seed=0, drop_remainder=True):
        """`epoch -> Dataset` for the Trainer: shuffled per (seed, epoch), full batches."""
        def make(epoch, skip_batches=0):
            return self.dataset("train", batch_size, shuffle=True, seed=seed, epoch=epoch,
                                drop_remainder=drop_remainder, skip_batches=skip_batches)
        return make

    def steps_per_epoch(self, batch_size, drop_remainder=True):
        n = self.size("train")
        return n // batch_size if drop_remainder else -(-n // batch_size)


def check_seed(seed):
    """Raise ValueError unless `seed` is an integer >= 0 (NumPy's generators refuse others,
    with a message that does not name the argument)."""
    if isinstance(seed, np.integer):
        seed = int(seed)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError("seed must be an integer >= 0, got %r" % (seed,))
    return seed


def split_counts(n_train, n_val, n_test):
    for name, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        check_positive_int(name, n)
    return {"train": n_train, "validation": n_val, "test": n_test}


# Distinct examples are drawn until there are enough; this many duplicates in a row means
# the task's settings cannot give that many (e.g. one filler word and one class).
MAX_DUPLICATE_DRAWS = 10000


def check_duplicate_draws(task, duplicates, found, total):
    """Raise when `duplicates` draws in a row repeated an example already drawn.

    Raises:
        ValueError: naming the task, how many distinct examples were found and how many
            n_train + n_val + n_test ask for.
    """
    if duplicates >= MAX_DUPLICATE_DRAWS:
        raise ValueError("%s: found only %d distinct examples of the %d that n_train + n_val "
                         "+ n_test ask for (%d draws in a row repeated one); ask for fewer "
                         "or allow more variety (vocabulary, lengths, classes)"
                         % (task, found, total, duplicates))
