"""Document task: the key sentence's marker decides the label; seeded, padded, disjoint splits."""
import numpy as np
import pytest

from attnlab.data import make_task
from attnlab.data.documents import make_documents

SMALL = dict(n_train=80, n_val=12, n_test=16)
ARGS = dict(num_classes=3, num_filler=10, num_distractors=2, min_sentences=2,
            max_sentences=5, min_words=2, max_words=6)


def _docs(x):
    return {row.tobytes() for row in x}


def test_the_key_sentence_marker_sets_the_label_and_nothing_else_does():
    task = make_documents(seed=3, **SMALL, **ARGS)
    vocab = task.source_vocab
    for split in ("train", "validation", "test"):
        x, y, _ = task.arrays(split)
        meta = task.meta[split]
        assert x.dtype == np.int32 and x.shape == (task.size(split), 5, 6)
        for doc, label, key, marker_mask, n in zip(x, y, meta["key_sentence"],
                                                   meta["marker_mask"], meta["num_sentences"]):
            tokens = [[vocab.tokens[i] for i in sentence] for sentence in doc]
            markers = [(s, t) for s, sentence in enumerate(tokens)
                       for t, token in enumerate(sentence) if token.startswith("M")]
            # Exactly one marker in the whole document, in the key sentence, naming the label.
            assert len(markers) == 1 and markers[0][0] == key
            assert tokens[markers[0][0]][markers[0][1]] == "M%d" % label
            assert list(zip(*np.nonzero(marker_mask))) == markers
            # Real sentences come first, each 2..6 words, then all-padding sentences.
            real = (doc != 0).any(-1)
            assert 2 <= n <= 5 and real[:n].all() and not real[n:].any()
            assert 0 <= key < n
            for sentence in doc[:n]:
                length = int((sentence != 0).sum())
                assert 2 <= length <= 6 and (sentence[:length] != 0).all()
            assert {t for row in tokens for t in row} <= set(
                ["<pad>"] + ["w%d" % i for i in range(10)] + ["D0", "D1"] + ["M%d" % label])


def test_labels_are_not_given_away_by_position_or_distractors():
    task = make_documents(seed=0, n_train=600, n_val=10, n_test=10, **ARGS)
    x, y, _ = task.arrays("train")
    key = task.meta["train"]["key_sentence"]
    n = task.meta["train"]["num_sentences"]
    assert set(np.unique(y)) == {0, 1, 2}
    # The key sentence is spread over the document, not always first or last.
    assert len(set(key.tolist())) == 5 and np.mean(key == n - 1) < 0.6
    distractors = [task.source_vocab.token_id(t) for t in ("D0", "D1")]
    has_d0 = (x == distractors[0]).any(axis=(1, 2))
    for label in range(3):
        share = np.mean(has_d0[y == label])
        assert abs(share - np.mean(has_d0)) < 0.15


def test_seeded_with_disjoint_splits_and_registered():
    task = make_task("documents", seed=5, **SMALL, **ARGS)
    again = make_documents(seed=5, **SMALL, **ARGS)
    other = make_documents(seed=6, **SMALL, **ARGS)
    assert task.kind == "classification" and task.num_classes == 3 and task.name == "documents"
    assert [task.size(s) for s in ("train", "validation", "test")] == [80, 12, 16]
    for split in ("train", "validation", "test"):
        np.testing.assert_array_equal(task.arrays(split)[0], again.arrays(split)[0])
        np.testing.assert_array_equal(task.arrays(split)[1], again.arrays(split)[1])
        np.testing.assert_array_equal(task.meta[split]["key_sentence"],
                                      again.meta[split]["key_sentence"])
    assert not np.array_equal(task.arrays("train")[0], other.arrays("train")[0])
    train, test = _docs(task.arrays("train")[0]), _docs(task.arrays("test")[0])
    assert len(train) == 80 and train.isdisjoint(test)


def test_batches_of_documents_keep_their_shape():
    task = make_documents(seed=1, **SMALL, **ARGS)
    x, y = next(iter(task.dataset("train", 16, shuffle=True, seed=2)))
    assert x.shape == (16, 5, 6) and y.shape == (16,)


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match=r"min_sentences \(4\) must be <= max_sentences \(3\)"):
        make_documents(min_sentences=4, max_sentences=3)
    with pytest.raises(ValueError, match=r"min_words \(9\) must be <= max_words \(8\)"):
        make_documents(min_words=9)
    with pytest.raises(ValueError, match="num_classes must be a positive integer, got 0"):
        make_documents(num_classes=0)
    with pytest.raises(ValueError, match="num_distractors must be an integer >= 0, got -1"):
        make_documents(num_distractors=-1)
    with pytest.raises(ValueError, match="n_test must be a positive integer, got 0"):
        make_documents(n_test=0)
