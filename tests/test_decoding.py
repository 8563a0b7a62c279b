"""Decoding: cache == recompute, beam width 1 == greedy, top-k 1 == greedy, beam == exhaustive."""
import itertools

import numpy as np
import pytest
import tensorflow as tf

from attnlab.decoding import (
    _filter_logits,
    beam_search,
    greedy_decode,
    greedy_decode_graph,
    sample_decode,
)
from attnlab.models.rnn_seq2seq import RNNSeq2Seq
from attnlab.models.transformer import TransformerSeq2Seq

BOS, EOS, PAD = 1, 2, 0


def _source(batch=3, length=5, seed=0):
    rng = np.random.default_rng(seed)
    source = rng.integers(4, 10, size=(batch, length)).astype(np.int32)
    source[0, 3:] = 0
    return source


@pytest.fixture(scope="module")
def transformer():
    tf.keras.utils.set_random_seed(1)
    return TransformerSeq2Seq(10, 10, d_model=16, num_heads=2, ff_dim=32, num_layers=1,
                              max_length=12)


@pytest.fixture(scope="module")
def rnn():
    tf.keras.utils.set_random_seed(2)
    return RNNSeq2Seq(10, 10, embed_dim=8, units=16)


def _check_layout(ids, max_length):
    assert ids.dtype == np.int32 and ids.shape[1] == max_length
    for row in ids:
        ends = np.flatnonzero(row == EOS)
        if len(ends):
            assert np.all(row[ends[0] + 1:] == PAD)


@pytest.mark.parametrize("name", ["transformer", "rnn"])
def test_cached_greedy_equals_recomputed_greedy(name, request):
    model = request.getfixturevalue(name)
    source = _source()
    cached = greedy_decode(model, source, max_length=10)
    recomputed = greedy_decode(model, source, max_length=10, use_cache=False)
    np.testing.assert_array_equal(cached, recomputed)
    _check_layout(cached, 10)


@pytest.mark.parametrize("name", ["transformer", "rnn"])
def test_graph_greedy_traced_for_any_batch_equals_greedy(name, request):
    """One trace with unknown batch and length serves batches of any size (as in an export);
    rows that end early are padded to max_length like greedy_decode's."""
    model = request.getfixturevalue(name)
    decode = tf.function(lambda source: greedy_decode_graph(model, source, 7),
                         input_signature=[tf.TensorSpec([None, None], tf.int32)])
    for batch, length in ((3, 5), (1, 4)):
        source = _source(batch, length, seed=batch)
        # Eager reference first: it builds a fresh model, whose variables would otherwise be
        # created inside the first trace and make tf.function trace a second time.
        expected = greedy_decode(model, source, max_length=7)
        got = decode(tf.constant(source)).numpy()
        np.testing.assert_array_equal(got, expected)
        _check_layout(got, 7)
    assert decode.experimental_get_tracing_count() == 1


def test_greedy_picks_the_argmax_of_the_full_run(transformer):
    """Independent reference: rerun the full model on the decoded prefix."""
    source = _source()
    ids = greedy_decode(transformer, source, max_length=6)
    prefix = np.concatenate([np.full((3, 1), BOS, np.int32), ids[:, :-1]], axis=1)
    logits = transformer({"source": source, "target_in": prefix}).numpy()
    for row in range(3):
        for t in range(6):
            if t and ids[row, t - 1] in (EOS, PAD):
                break
            assert ids[row, t] == np.argmax(logits[row, t])


@pytest.mark.parametrize("name", ["transformer", "rnn"])
def test_beam_width_one_and_top_k_one_are_greedy(name, request):
    model = request.getfixturevalue(name)
    source = _source(seed=3)
    greedy = greedy_decode(model, source, max_length=8)
    np.testing.assert_array_equal(beam_search(model, source, beam_width=1, max_length=8),
                                  greedy)
    np.testing.assert_array_equal(sample_decode(model, source, max_length=8, top_k=1, seed=5),
                                  greedy)
    np.testing.assert_array_equal(
        sample_decode(model, source, max_length=8, top_p=1e-6, seed=6), greedy)


def _exhaustive_best(model, source, max_length, alpha):
    """Score every possible output with the uncached full run; GNMT-normalized."""
    vocab = model.target_vocab_size
    best, best_score = None, -np.inf
    candidates = []
    for length in range(1, max_length + 1):
        for body in itertools.product(range(vocab), repeat=length):
            ended = EOS in body
            if ended and body.index(EOS) != length - 1:
                continue
            if not ended and length < max_length:
                continue
            candidates.append(body)
    # One batched, uncached, causal forward pass scores every candidate's prefix.
    prefixes = np.zeros((len(candidates), max_length), np.int32)
    for row, body in enumerate(candidates):
        prefixes[row, :len(body)] = [BOS] + list(body[:-1])
    sources = np.repeat(source, len(candidates), axis=0)
    logp = tf.nn.log_softmax(model({"source": sources, "target_in": prefixes})).numpy()
    for row, body in enumerate(candidates):
        score = sum(logp[row, t, tok] for t, tok in enumerate(body))
        score /= ((5.0 + len(body)) / 6.0) ** alpha
        if score > best_score:
            best, best_score = body, score
    return best, best_score


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_wide_beam_finds_the_exhaustive_optimum(alpha):
    tf.keras.utils.set_random_seed(4)
    # A 4-token vocabulary (pad, <s>, </s>, one word) keeps exhaustive search small.
    model = TransformerSeq2Seq(6, 4, d_model=8, num_heads=2, ff_dim=16, num_layers=1,
                               max_length=4)
    source = np.array([[4, 5, 4]], np.int32)
    best, best_score = _exhaustive_best(model, source, 3, alpha)
    ids, scores = beam_search(model, source, beam_width=16, max_length=3,
                              length_penalty=alpha, return_scores=True)
    expected = list(best) + [PAD] * (3 - len(best))
    assert ids[0].tolist() == expected
    assert scores[0] == pytest.approx(best_score, rel=1e-4)


def test_sampling_is_seeded_and_stays_in_the_top_k(transformer):
    source = _source(batch=4)
    a = sample_decode(transformer, source, max_length=8, top_k=3, temperature=2.0, seed=9)
    b = sample_decode(transformer, source, max_length=8, top_k=3, temperature=2.0, seed=9)
    np.testing.assert_array_equal(a, b)
    _check_layout(a, 8)
    prefix = np.concatenate([np.full((4, 1), BOS, np.int32), a[:, :-1]], axis=1)
    logits = transformer({"source": source, "target_in": prefix}).numpy()
    for row in range(4):
        for t in range(8):
            if t and a[row, t - 1] in (EOS, PAD):
                break
            top3 = np.argsort(-logits[row, t])[:3]
            assert a[row, t] in top3


def test_filter_logits_against_a_sorted_reference():
    logits = np.log(np.array([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    kept = np.isfinite(_filter_logits(logits, None, 0.8))[0]
    assert kept.tolist() == [True, True, True, False, False]  # 0.5 + 0.2 + 0.15 >= 0.8
    kept = np.isfinite(_filter_logits(logits, 2, None))[0]
    assert kept.tolist() == [True, True, False, False, False]


def test_bad_arguments_name_the_value(transformer):
    source = _source()
    with pytest.raises(ValueError, match="max_length must be a positive integer, got 0"):
        greedy_decode(transformer, source, max_length=0)
    with pytest.raises(ValueError, match="beam_width must be a positive integer, got 0"):
        beam_search(transformer, source, beam_width=0)
    with pytest.raises(ValueError, match="length_penalty must be a number >= 0, got -1"):
        beam_search(transformer, source, length_penalty=-1)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\] or None, got 1.5"):
        sample_decode(transformer, source, 4, top_p=1.5)
    with pytest.raises(ValueError, match="temperature must be a number > 0, got 0"):
        sample_decode(transformer, source, 4, temperature=0)
    with pytest.raises(ValueError, match="source must be integer token ids of shape"):
        greedy_decode(transformer, source.astype(np.float32), 4)
    with pytest.raises(TypeError, match="lacks the decoding method encode"):
        greedy_decode(tf.keras.Sequential(), source, 4)
