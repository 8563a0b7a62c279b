"""Document classification where one key sentence decides the label (for hierarchical attention)."""
import numpy as np

from attnlab.data.task import SPLITS, Task, check_duplicate_draws, check_seed, split_counts
from attnlab.data.vocab import Vocabulary
from attnlab.validation import check_non_negative_int, check_positive_int


def make_documents(seed=0, n_train=4000, n_val=500, n_test=500, num_classes=4, num_filler=50,
                   num_distractors=4, min_sentences=2, max_sentences=6, min_words=3,
                   max_words=8):
    """Documents of filler sentences, one of which holds a marker word that sets the label.

    Every document has one key sentence, at a random position, containing exactly one marker
    token "M<c>" (c = the label); no other sentence holds a marker. Distractor tokens "D<i>"
    appear in any sentence at random, independent of the label, so a model has to find the
    marker's sentence and word; its sentence attention should land on the key sentence.

    Args:
        seed: generator seed; the same seed gives the same data.
        n_train, n_val, n_test: documents per split.
        num_classes: number of labels (one marker token per class).
        num_filler: filler vocabulary size ("w0", "w1", ...).
        num_distractors: distractor tokens ("D0", ...); 0 for none.
        min_sentences, max_sentences: sentences per document (inclusive); padded to
            max_sentences with all-padding sentences.
        min_words, max_words: words per sentence (inclusive); padded to max_words.

    Returns:
        Task of kind "classification": x = token ids (N, max_sentences, max_words), 0 =
        padding; y = labels (N,). meta[split]["key_sentence"] is the key sentence's index
        (N,), meta[split]["marker_mask"] a bool (N, max_sentences, max_words) array, True on
        the marker, and meta[split]["num_sentences"] the real sentence count (N,).

    Example:
        >>> task = make_documents(seed=0, n_train=64, n_val=16, n_test=16)
        >>> task.arrays("train")[0].shape
        (64, 6, 8)
    """
    check_seed(seed)
    counts = split_counts(n_train, n_val, n_test)
    for name, value in (("num_classes", num_classes), ("num_filler", num_filler),
                        ("min_sentences", min_sentences), ("max_sentences", max_sentences),
                        ("min_words", min_words), ("max_words", max_words)):
        check_positive_int(name, value)
    check_non_negative_int("num_distractors", num_distractors)
    for low, high, low_value, high_value in (
            ("min_sentences", "max_sentences", min_sentences, max_sentences),
            ("min_words", "max_words", min_words, max_words)):
        if low_value > high_value:
            raise ValueError("%s (%d) must be <= %s (%d)" % (low, low_value, high, high_value))
    vocab = Vocabulary(["w%d" % i for i in range(num_filler)] +
                       ["D%d" % i for i in range(num_distractors)] +
                       ["M%d" % c for c in range(num_classes)])
    # Distractors are drawn like fillers, so they are as frequent as a marker but never decide.
    word_ids = np.array([vocab.token_id("w%d" % i) for i in range(num_filler)] +
                        [vocab.token_id("D%d" % i) for i in range(num_distractors)])
    marker_ids = np.array([vocab.token_id("M%d" % c) for c in range(num_classes)])
    rng = np.random.default_rng(seed)
    total = sum(counts.values())
    shape = (max_sentences, max_words)
    seen, docs, labels, keys, markers, lengths = set(), [], [], [], [], []
    duplicates = 0
    while len(docs) < total:
        num_sentences = int(rng.integers(min_sentences, max_sentences + 1))
        label = int(rng.integers(num_classes))
        key = int(rng.integers(num_sentences))
        doc = np.zeros(shape, np.int32)
        marker = np.zeros(shape, bool)
        for s in range(num_sentences):
            n_words = int(rng.integers(min_words, max_words + 1))
            doc[s, :n_words] = rng.choice(word_ids, size=n_words)
            if s == key:
                position = int(rng.integers(n_words))
                doc[s, position] = marker_ids[label]
                marker[s, position] = True
        fingerprint = doc.tobytes()
        if fingerprint in seen:
            duplicates += 1
            check_duplicate_draws("documents", duplicates, len(docs), total)
            continue
        duplicates = 0
        seen.add(fingerprint)
        docs.append(doc)
        labels.append(label)
        keys.append(key)
        markers.append(marker)
        lengths.append(num_sentences)
    splits, meta, start = {}, {}, 0
    for split in SPLITS:
        sl = slice(start, start + counts[split])
        start += counts[split]
        splits[split] = {"x": np.stack(docs[sl]), "y": np.asarray(labels[sl], np.int32)}
        meta[split] = {"key_sentence": np.asarray(keys[sl], np.int32),
                       "marker_mask": np.stack(markers[sl]),
                       "num_sentences": np.asarray(lengths[sl], np.int32)}
    return Task("documents", "classification", splits, vocab, num_classes=num_classes,
                meta=meta)
