"""Copy, reverse and sort: Transformer sanity tasks with known attention patterns."""
import numpy as np

from attnlab.data.dates import seq2seq_arrays
from attnlab.data.task import SPLITS, Task, check_seed, split_counts
from attnlab.data.vocab import Vocabulary
from attnlab.validation import check_choice, check_positive_int

OPERATIONS = {
    "copy": lambda s: list(s),
    "reverse": lambda s: list(s)[::-1],
    "sort": lambda s: sorted(s),
}


def make_sequence_task(operation, seed=0, n_train=10000, n_val=500, n_test=500,
                       num_symbols=10, min_length=4, max_length=10):
    """Random symbol sequences and their copy / reversal / sorted version.

    Every sequence appears at most once over all splits, so test sequences are unseen.
    Reversal gives an anti-diagonal cross-attention map; copy a diagonal one.

    Args:
        operation: "copy", "reverse" or "sort".
        seed: generator seed; the same seed gives the same data.
        n_train, n_val, n_test: examples per split.
        num_symbols: distinct symbols (tokens "s0", "s1", ...).
        min_length, max_length: sequence length range (inclusive).

    Returns:
        Task of kind "seq2seq" (see `make_dates` for the array layout); source (N, max_length),
        targets (N, max_length + 1).
    """
    check_choice("operation", operation, sorted(OPERATIONS))
    check_seed(seed)
    counts = split_counts(n_train, n_val, n_test)
    for name, value in (("num_symbols", num_symbols), ("min_length", min_length),
                        ("max_length", max_length)):
        check_positive_int(name, value)
    if min_length > max_length:
        raise ValueError("min_length (%d) must be <= max_length (%d)" % (min_length, max_length))
    total = sum(counts.values())
    capacity = sum(num_symbols ** n for n in range(min_length, max_length + 1))
    if total > capacity // 2:
        raise ValueError("%d distinct sequences requested but only %d exist with num_symbols=%d "
                         "and lengths %d-%d" % (total, capacity, num_symbols, min_length,
                                                max_length))
    vocab = Vocabulary(["s%d" % i for i in range(num_symbols)])
    first = len(vocab) - num_symbols
    rng = np.random.default_rng(seed)
    seen, sequences = set(), []
    while len(sequences) < total:
        length = int(rng.integers(min_length, max_length + 1))
        seq = tuple(int(v) for v in rng.integers(first, first + num_symbols, size=length))
        if seq not in seen:
            seen.add(seq)
            sequences.append(list(seq))
    op = OPERATIONS[operation]
    splits, meta, start = {}, {}, 0
    for split in SPLITS:
        chunk = sequences[start:start + counts[split]]
        start += counts[split]
        splits[split] = seq2seq_arrays(chunk, [op(s) for s in chunk], max_length,
                                       max_length + 1)
        meta[split] = {"source_ids": chunk}
    return Task(operation, "seq2seq", splits, vocab, vocab, meta=meta)
