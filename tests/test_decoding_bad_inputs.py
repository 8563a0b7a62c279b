"""Decoding refuses bad arguments before any model call, with errors naming the argument."""
import numpy as np
import pytest
import tensorflow as tf

from attnlab.decoding import beam_search, greedy_decode, greedy_decode_graph, sample_decode
from attnlab.models.transformer import TransformerSeq2Seq

NAN, INF = float("nan"), float("inf")
SOURCE = np.array([[4, 5, 6], [7, 8, 0]], np.int32)


@pytest.fixture(scope="module")
def model():
    tf.keras.utils.set_random_seed(1)
    return TransformerSeq2Seq(10, 10, d_model=8, num_heads=2, ff_dim=16, num_layers=1,
                              max_length=12)


def _greedy(model, **kw):
    args = {"source": SOURCE, "max_length": 4}
    args.update(kw)
    return greedy_decode(model, **args)


def _beam(model, **kw):
    args = {"source": SOURCE, "max_length": 4, "beam_width": 2}
    args.update(kw)
    return beam_search(model, **args)


def _sample(model, **kw):
    args = {"source": SOURCE, "max_length": 4}
    args.update(kw)
    return sample_decode(model, **args)


DECODERS = {"greedy": _greedy, "beam": _beam, "sample": _sample}

# (arguments, exception, message): applied to every decoding function.
COMMON = [
    ({"max_length": 0}, ValueError, "max_length must be a positive integer, got 0"),
    ({"max_length": -3}, ValueError, "max_length must be a positive integer"),
    ({"max_length": 2.5}, ValueError, "max_length must be a positive integer, got 2.5"),
    ({"max_length": NAN}, ValueError, "max_length must be a positive integer, got nan"),
    ({"bos_id": 10}, ValueError, r"bos_id must be a token id in \[0, 10\).*got 10"),
    ({"bos_id": -1}, ValueError, "bos_id must be an integer >= 0, got -1"),
    ({"eos_id": 99}, ValueError, r"eos_id must be a token id in \[0, 10\)"),
    ({"eos_id": 2.0}, ValueError, "eos_id must be an integer >= 0, got 2.0"),
    ({"eos_id": -2}, ValueError, "eos_id must be an integer >= 0, got -2"),
    ({"pad_id": 10}, ValueError, r"pad_id must be a token id in \[0, 10\)"),
    ({"source": np.array([[4, 10, 5]])}, ValueError,
     r"source has 1 token id\(s\) outside \[0, 10\)"),
    ({"source": np.array([[4, -1, 5], [-2, 4, 4]])}, ValueError, r"source has 2 token id"),
    ({"source": np.zeros((0, 3), np.int32)}, ValueError, r"source is empty.*\(0, 3\)"),
    ({"source": np.zeros((2, 0), np.int32)}, ValueError, r"source is empty.*\(2, 0\)"),
    ({"source": np.array([4, 5, 6])}, ValueError, r"source must be integer token ids of shape"),
    ({"source": SOURCE.astype(np.float32)}, ValueError, "source must be integer token ids"),
]


@pytest.mark.parametrize("decoder", sorted(DECODERS))
@pytest.mark.parametrize("kwargs,error,message", COMMON,
                         ids=["%s=%s" % next(iter(c[0].items())) if "source" not in c[0]
                              else "source-%d" % i for i, c in enumerate(COMMON)])
def test_common_bad_arguments(model, decoder, kwargs, error, message):
    with pytest.raises(error, match=message):
        DECODERS[decoder](model, **kwargs)


@pytest.mark.parametrize("kwargs,message", [
    ({"beam_width": 0}, "beam_width must be a positive integer, got 0"),
    ({"beam_width": -1}, "beam_width must be a positive integer, got -1"),
    ({"beam_width": 1.5}, "beam_width must be a positive integer, got 1.5"),
    ({"beam_width": True}, "beam_width must be a positive integer, got True"),
    ({"length_penalty": NAN}, "length_penalty must be a number >= 0, got nan"),
    ({"length_penalty": INF}, "length_penalty must be a finite number, got inf"),
    ({"length_penalty": -0.5}, "length_penalty must be a number >= 0, got -0.5"),
    ({"length_penalty": "0.6"}, "length_penalty must be a number >= 0, got '0.6'"),
])
def test_beam_search_bad_arguments(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _beam(model, **kwargs)


@pytest.mark.parametrize("kwargs,message", [
    ({"temperature": NAN}, "temperature must be a number > 0, got nan"),
    ({"temperature": 0}, "temperature must be a number > 0, got 0"),
    ({"temperature": -1.0}, "temperature must be a number > 0, got -1.0"),
    ({"temperature": INF}, "temperature must be a finite number, got inf"),
    ({"temperature": "hot"}, "temperature must be a number > 0, got 'hot'"),
    ({"top_k": 0}, "top_k must be a positive integer, got 0"),
    ({"top_k": 11}, "top_k must be at most the target vocabulary size 10, got 11"),
    ({"top_k": 2.0}, "top_k must be a positive integer, got 2.0"),
    ({"top_p": NAN}, r"top_p must be in \(0, 1\] or None, got nan"),
    ({"top_p": 0.0}, r"top_p must be in \(0, 1\] or None, got 0.0"),
    ({"top_p": 1.01}, r"top_p must be in \(0, 1\] or None, got 1.01"),
    ({"top_p": -0.2}, r"top_p must be in \(0, 1\] or None, got -0.2"),
    ({"top_p": "0.9"}, r"top_p must be in \(0, 1\] or None, got '0.9'"),
])
def test_sampling_bad_arguments(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _sample(model, **kwargs)


@pytest.mark.parametrize("kwargs,message", [
    ({"max_length": 0}, "max_length must be a positive integer, got 0"),
    ({"bos_id": 10}, r"bos_id must be a token id in \[0, 10\)"),
    ({"eos_id": -5}, "eos_id must be an integer >= 0, got -5"),
])
def test_graph_greedy_bad_arguments(model, kwargs, message):
    args = {"max_length": 4}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        greedy_decode_graph(model, tf.constant(SOURCE), **args)


def test_graph_greedy_checks_ids_at_run_time(model):
    # Traced with an unknown batch and length: the vocabulary check becomes an assertion.
    serve = tf.function(lambda s: greedy_decode_graph(model, s, 3),
                        input_signature=[tf.TensorSpec([None, None], tf.int32)])
    assert serve(tf.constant(SOURCE)).shape == (2, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="source token ids must be < "
                                                             "source_vocab_size=10"):
        serve(tf.constant([[4, 12, 5]]))


def test_eos_minus_one_means_no_end_token_and_numpy_ids_are_accepted(model):
    ids = greedy_decode(model, SOURCE, 3, bos_id=np.int64(1), eos_id=-1)
    assert ids.shape == (2, 3)
