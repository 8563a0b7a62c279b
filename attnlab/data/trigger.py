"""Trigger-token classification: the label is set by a few key tokens among filler."""
import numpy as np

from attnlab.data.task import SPLITS, Task, check_duplicate_draws, check_seed, split_counts
from attnlab.data.vocab import Vocabulary, pad_batch
from attnlab.validation import check_positive_int


def make_trigger(seed=0, n_train=4000, n_val=500, n_test=500, num_classes=4,
                 num_filler=50, min_length=8, max_length=20, max_triggers=2):
    """Sequences of filler words with 1..max_triggers copies of one trigger token.

    The label is the class of the trigger token; fillers carry no information, so a model
    that classifies well must find the triggers, and its attention should land on them.

    Args:
        seed: generator seed; the same seed gives the same data.
        n_train, n_val, n_test: examples per split.
        num_classes: number of labels (one trigger token "T<c>" per class).
        num_filler: filler vocabulary size ("w0", "w1", ...).
        min_length, max_length: sequence length range (inclusive); padded to max_length.
        max_triggers: at most this many trigger tokens per sequence (at least 1).

    Returns:
        Task of kind "classification": x = token ids (N, max_length), y = labels (N,);
        meta[split]["trigger_mask"] is a bool (N, max_length) array, True on triggers.
    """
    check_seed(seed)
    counts = split_counts(n_train, n_val, n_test)
    for name, value in (("num_classes", num_classes), ("num_filler", num_filler),
                        ("min_length", min_length), ("max_length", max_length),
                        ("max_triggers", max_triggers)):
        check_positive_int(name, value)
    if min_length > max_length:
        raise ValueError("min_length (%d) must be <= max_length (%d)" % (min_length, max_length))
    if max_triggers > min_length:
        raise ValueError("max_triggers (%d) must be <= min_length (%d)"
                         % (max_triggers, min_length))
    vocab = Vocabulary(["w%d" % i for i in range(num_filler)] +
                       ["T%d" % c for c in range(num_classes)])
    filler_ids = np.array([vocab.token_id("w%d" % i) for i in range(num_filler)])
    trigger_ids = np.array([vocab.token_id("T%d" % c) for c in range(num_classes)])
    rng = np.random.default_rng(seed)
    total = sum(counts.values())
    seen, rows, labels, masks = set(), [], [], []
    duplicates = 0
    while len(rows) < total:
        length = int(rng.integers(min_length, max_length + 1))
        label = int(rng.integers(num_classes))
        seq = rng.choice(filler_ids, size=length)
        positions = rng.choice(length, size=int(rng.integers(1, max_triggers + 1)),
                               replace=False)
        seq[positions] = trigger_ids[label]
        key = tuple(int(v) for v in seq)
        if key in seen:
            duplicates += 1
            check_duplicate_draws("trigger", duplicates, len(rows), total)
            continue
        duplicates = 0
        seen.add(key)
        rows.append(list(key))
        labels.append(label)
        mask = np.zeros(max_length, bool)
        mask[positions] = True
        masks.append(mask)
    splits, meta, start = {}, {}, 0
    for split in SPLITS:
        sl = slice(start, start + counts[split])
        start += counts[split]
        splits[split] = {"x": pad_batch(rows[sl], max_length),
                         "y": np.asarray(labels[sl], np.int32)}
        meta[split] = {"trigger_mask": np.stack(masks[sl])}
    return Task("trigger", "classification", splits, vocab, num_classes=num_classes, meta=meta)
