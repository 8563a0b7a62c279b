"""Autoregressive decoding: greedy, beam search with length penalty, top-k / top-p sampling.

Works with any model that follows the attnlab seq2seq decoding protocol
(`attnlab.models.RNNSeq2Seq`, `attnlab.models.TransformerSeq2Seq`):

- `encode(source) -> memory` (a nest of batch-first tensors),
- `init_decode_state(memory, max_length) -> state` (batch-first: a KV cache or RNN state),
- `decode_step(tokens (B,), memory, state, index) -> (logits (B, V), state)`,
- `decode_full(prefix (B, L), memory) -> logits (B, L, V)` (no cache: recompute).

Every function returns int32 ids (B, max_length): generated tokens, the end token, then
padding (id 0). The <s> token fed first is not included.
"""
import weakref

import numpy as np
import tensorflow as tf

from attnlab.validation import check_non_negative_int, check_number, check_positive_int

_COMPILED = weakref.WeakKeyDictionary()


def _compiled(model):
    """tf.function versions of the model's decoding methods, traced once per model."""
    if model not in _COMPILED:
        _COMPILED[model] = {
            "encode": tf.function(lambda source: model.encode(source)),
            "step": tf.function(model.decode_step),
            "full": tf.function(model.decode_full),
            "greedy_cached": tf.function(lambda memory, state, bos, eos, pad, max_length:
                                         _greedy_cached_loop(model, memory, state, bos, eos,
                                                             pad, max_length)),
            "greedy_full": tf.function(lambda memory, prefix, eos, pad, max_length:
                                       _greedy_full_loop(model, memory, prefix, eos, pad,
                                                         max_length)),
        }
    return _COMPILED[model]


def _greedy_cached_loop(model, memory, state, bos, eos, pad, max_length):
    """The whole cached greedy loop in one graph: one token per step, stop when all ended."""
    batch = tf.shape(memory_first(memory))[0]
    tokens = tf.fill([batch], bos)
    done = tf.zeros([batch], tf.bool)
    out = tf.TensorArray(tf.int32, size=0, dynamic_size=True)
    for t in tf.range(max_length):
        logits, state = model.decode_step(tokens, memory, state, t)
        chosen = tf.where(done, pad, tf.argmax(logits, -1, output_type=tf.int32))
        out = out.write(t, chosen)
        done = tf.logical_or(done, tf.equal(chosen, eos))
        tokens = chosen
        if tf.reduce_all(done):
            break
    return tf.transpose(out.stack())


def _greedy_full_loop(model, memory, prefix, eos, pad, max_length):
    """Greedy decoding that reruns the decoder over the (B, max_length) prefix each step."""
    batch = tf.shape(prefix)[0]
    done = tf.zeros([batch], tf.bool)
    out = tf.TensorArray(tf.int32, size=0, dynamic_size=True)
    columns = tf.range(max_length)[tf.newaxis, :]
    for t in tf.range(max_length):
        logits = model.decode_full(prefix, memory)[:, t]
        chosen = tf.where(done, pad, tf.argmax(logits, -1, output_type=tf.int32))
        out = out.write(t, chosen)
        done = tf.logical_or(done, tf.equal(chosen, eos))
        prefix = tf.where(tf.equal(columns, t + 1), chosen[:, tf.newaxis], prefix)
        if tf.reduce_all(done):
            break
    return tf.transpose(out.stack())


def greedy_decode_graph(model, source, max_length, bos_id=1, eos_id=2, pad_id=0):
    """Greedy decoding with the KV cache / RNN state as TensorFlow ops only.

    The same decoding as `greedy_decode(..., use_cache=True)`, but traceable in a
    tf.function with an unknown batch size and no NumPy, so it can be part of an exported
    graph (attnlab.train.export).

    Args:
        model: a model with the decoding protocol (module docstring).
        source: int32 ids (B, S) tensor.
        max_length: tokens to generate (a Python int: it sizes the KV cache).
        bos_id, eos_id, pad_id: special token ids inside the target vocabulary; eos_id=-1
            means no end token.

    Returns:
        int32 (B, max_length) tensor.

    Example:
        >>> serve = tf.function(lambda s: greedy_decode_graph(model, s, 11),
        ...                     input_signature=[tf.TensorSpec([None, None], tf.int32)])
    """
    check_positive_int("max_length", max_length)
    _check_token_ids(model, bos_id, eos_id, pad_id)
    source = _check_source(model, source, graph=not tf.executing_eagerly())
    memory = model.encode(source)
    state = model.init_decode_state(memory, max_length)
    ids = _greedy_cached_loop(model, memory, state, tf.constant(bos_id, tf.int32),
                              tf.constant(eos_id, tf.int32), tf.constant(pad_id, tf.int32),
                              tf.constant(max_length, tf.int32))
    # The loop stops once every row has ended: pad the remaining columns.
    ids = tf.pad(ids, [[0, 0], [0, max_length - tf.shape(ids)[1]]], constant_values=pad_id)
    return tf.ensure_shape(ids, [None, max_length])


def memory_first(memory):
    return tf.nest.flatten(memory)[0]


# Plain Python checks: not for AutoGraph to convert when traced in an export.
@tf.autograph.experimental.do_not_convert
def _check_token_ids(model, bos_id, eos_id, pad_id):
    """The special ids checked to be integers inside the target vocabulary (when the model
    says its size): an id outside it fails as a raw embedding lookup error, or never
    matches a generated token. eos_id=-1 is allowed: no end token (benchmarks use it to
    decode a fixed number of steps)."""
    vocab = getattr(model, "target_vocab_size", None)
    for name, value in (("bos_id", bos_id), ("eos_id", eos_id), ("pad_id", pad_id)):
        if name == "eos_id" and value == -1 and not isinstance(value, bool):
            continue  # the documented "no end token": generate exactly max_length tokens
        if isinstance(value, np.integer):
            value = int(value)
        check_non_negative_int(name, value)
        if vocab is not None and value >= vocab:
            raise ValueError("%s must be a token id in [0, %d) (the target vocabulary), got %d"
                             % (name, vocab, value))


# Plain Python checks: not for AutoGraph to convert when traced in an export.
@tf.autograph.experimental.do_not_convert
def _check_source(model, source, graph=False):
    """Token ids (B, S) as int32; ValueError for a wrong rank or dtype, an empty source or
    ids outside the source vocabulary (a raw embedding lookup error otherwise)."""
    source = tf.convert_to_tensor(source)
    if source.shape.rank != 2 or not source.dtype.is_integer:
        raise ValueError("source must be integer token ids of shape (B, S), got %s %s"
                         % (source.dtype.name, tuple(source.shape.as_list())
                            if source.shape.rank is not None else "(unknown rank)"))
    if 0 in source.shape.as_list():
        raise ValueError("source is empty: expected (B, S) token ids with B, S >= 1, got "
                         "shape %s" % (tuple(source.shape.as_list()),))
    source = tf.cast(source, tf.int32)
    vocab = getattr(model, "source_vocab_size", None)
    if graph:
        # Traced once per signature, before the loop: one assertion per call.
        checks = [tf.debugging.assert_non_negative(
            source, message="source token ids must be >= 0")]
        if vocab is not None:
            checks.append(tf.debugging.assert_less(
                source, tf.constant(vocab, tf.int32),
                message="source token ids must be < source_vocab_size=%d" % vocab))
        with tf.control_dependencies(checks):
            return tf.identity(source)
    ids = source.numpy()
    bad = (ids < 0) | ((ids >= vocab) if vocab is not None else False)
    if bad.any():
        raise ValueError("source has %d token id(s) outside [0, %s) (the source vocabulary), "
                         "e.g. %d" % (bad.sum(), vocab if vocab is not None else "inf",
                                      ids[bad][0]))
    return source


def _check(model, source, max_length, bos_id, eos_id, pad_id):
    for method in ("encode", "init_decode_state", "decode_step", "decode_full"):
        if not hasattr(model, method):
            raise TypeError("model %r lacks the decoding method %s(); see attnlab.decoding"
                            % (type(model).__name__, method))
    check_positive_int("max_length", max_length)
    _check_token_ids(model, bos_id, eos_id, pad_id)
    return _check_source(model, source)


def _check_finite(name, value):
    """An infinite penalty or temperature passes a one-sided bound but gives NaN scores."""
    if np.isinf(value):
        raise ValueError("%s must be a finite number, got %r" % (name, value))
    return value


def _finish(tokens, done, eos_id, pad_id):
    """Record `tokens` (B,) for sequences not yet done; returns (written tokens, new done)."""
    tokens = np.where(done, pad_id, tokens)
    return tokens, done | (tokens == eos_id)


def greedy_decode(model, source, max_length, bos_id=1, eos_id=2, pad_id=0, use_cache=True):
    """Pick the most likely token at every step.

    Args:
        model: a model with the decoding protocol (module docstring).
        source: int ids (B, S).
        max_length: tokens to generate at most.
        bos_id, eos_id, pad_id: special token ids inside the target vocabulary; eos_id=-1
            means no end token.
        use_cache: feed one token per step with the KV cache / RNN state (True), or rerun
            the decoder over the whole prefix at every step (False, the slow reference).

    Returns:
        int32 (B, max_length).

    Example:
        >>> ids = greedy_decode(model, task.arrays("test")[0]["source"][:4], max_length=11)
    """
    source = _check(model, source, max_length, bos_id, eos_id, pad_id)
    fns = _compiled(model)
    memory = fns["encode"](source)
    batch = int(source.shape[0])
    constants = [tf.constant(v, tf.int32) for v in (eos_id, pad_id, max_length)]
    if use_cache:
        state = model.init_decode_state(memory, max_length)
        ids = fns["greedy_cached"](memory, state, tf.constant(bos_id, tf.int32), *constants)
    else:
        prefix = np.full((batch, max_length), pad_id, np.int32)
        prefix[:, 0] = bos_id
        ids = fns["greedy_full"](memory, tf.constant(prefix), *constants)
    out = np.full((batch, max_length), pad_id, np.int32)
    ids = ids.numpy()
    out[:, :ids.shape[1]] = ids
    return out


def _length_penalty(length, alpha):
    """GNMT length penalty ((5 + length) / 6) ** alpha (Wu et al. 2016)."""
    return ((5.0 + length) / 6.0) ** alpha


def beam_search(model, source, beam_width=4, max_length=32, length_penalty=0.6, bos_id=1,
                eos_id=2, pad_id=0, return_scores=False):
    """Keep the `beam_width` best partial sequences, ranked by length-normalized log-prob.

    Args:
        model: a model with the decoding protocol (module docstring).
        source: int ids (B, S).
        beam_width: K, beams per example (1 is greedy decoding).
        max_length: tokens to generate at most.
        length_penalty: alpha of the GNMT penalty; 0 ranks by raw log-probability, larger
            values favour longer outputs.
        bos_id, eos_id, pad_id: special token ids inside the target vocabulary; eos_id=-1
            means no end token.
        return_scores: also return the (B,) normalized scores of the chosen sequences.

    Returns:
        int32 (B, max_length) best sequences (and their scores).

    Example:
        >>> ids = beam_search(model, source, beam_width=4, max_length=11)
    """
    source = _check(model, source, max_length, bos_id, eos_id, pad_id)
    check_positive_int("beam_width", beam_width)
    _check_finite("length_penalty", check_number("length_penalty", length_penalty, at_least=0))
    fns = _compiled(model)
    batch, k = int(source.shape[0]), beam_width
    memory = fns["encode"](tf.repeat(source, k, axis=0))
    state = model.init_decode_state(memory, max_length)
    scores = np.full((batch, k), -np.inf)
    scores[:, 0] = 0.0  # one live beam at the start: the others would be duplicates
    seqs = np.full((batch, k, max_length), pad_id, np.int32)
    done = np.zeros((batch, k), bool)
    lengths = np.zeros((batch, k))
    tokens = tf.fill([batch * k], bos_id)
    for t in range(max_length):
        logits, state = fns["step"](tokens, memory, state, tf.constant(t, tf.int32))
        logp = tf.nn.log_softmax(logits).numpy().astype(np.float64)
        vocab = logp.shape[-1]
        logp = logp.reshape(batch, k, vocab)
        # A finished beam only continues with padding, at no cost.
        logp[done] = -np.inf
        logp[done, pad_id] = 0.0
        candidates = scores[:, :, None] + logp
        new_lengths = lengths + (~done)
        ranked = candidates / _length_penalty(new_lengths, length_penalty)[:, :, None]
        flat = ranked.reshape(batch, k * vocab)
        top = np.argsort(-flat, axis=1, kind="stable")[:, :k]
        beam, token = top // vocab, (top % vocab).astype(np.int32)
        rows = np.arange(batch)[:, None]
        scores = candidates.reshape(batch, k * vocab)[rows, top]
        seqs = seqs[rows, beam]
        seqs[:, :, t] = token
        was_done = done[rows, beam]
        lengths = new_lengths[rows, beam]
        done = was_done | (token == eos_id)
        gather = tf.constant((rows * k + beam).reshape(-1).astype(np.int32))
        state = tf.nest.map_structure(lambda s, g=gather: tf.gather(s, g), state)
        if done.all():
            break
        tokens = tf.constant(token.reshape(-1))
    final = scores / _length_penalty(lengths, length_penalty)
    best = np.argmax(final, axis=1)
    result = seqs[np.arange(batch), best]
    if return_scores:
        return result, final[np.arange(batch), best]
    return result


def _filter_logits(logits, top_k, top_p):
    """Set logits outside the top-k and outside the top-p nucleus to -inf (per row)."""
    logits = logits.copy()
    if top_k is not None:
        kth = np.sort(logits, axis=-1)[:, -top_k][:, None]
        logits[logits < kth] = -np.inf
    if top_p is not None:
        order = np.argsort(-logits, axis=-1, kind="stable")
        sorted_logits = np.take_along_axis(logits, order, -1)
        probs = np.exp(sorted_logits - sorted_logits[:, :1])
        probs /= probs.sum(-1, keepdims=True)
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        cut = np.cumsum(probs, -1) - probs >= top_p
        sorted_logits[cut] = -np.inf
        np.put_along_axis(logits, order, sorted_logits, -1)
    return logits


def sample_decode(model, source, max_length, top_k=None, top_p=None, temperature=1.0, seed=0,
                  bos_id=1, eos_id=2, pad_id=0):
    """Sample each token from the temperature-scaled distribution, optionally truncated.

    Args:
        model: a model with the decoding protocol (module docstring).
        source: int ids (B, S).
        max_length: tokens to generate at most.
        top_k: sample among the k most likely tokens (top_k=1 is greedy decoding).
        top_p: nucleus sampling: among the most likely tokens whose mass reaches top_p.
        temperature: divides the logits (> 0); lower is more conservative.
        seed: seed of the sampler; the same seed gives the same output.
        bos_id, eos_id, pad_id: special token ids inside the target vocabulary; eos_id=-1
            means no end token.

    Returns:
        int32 (B, max_length).

    Example:
        >>> ids = sample_decode(model, source, max_length=11, top_p=0.9, seed=1)
    """
    source = _check(model, source, max_length, bos_id, eos_id, pad_id)
    if top_k is not None:
        check_positive_int("top_k", top_k)
        vocab = getattr(model, "target_vocab_size", None)
        if vocab is not None and top_k > vocab:
            raise ValueError("top_k must be at most the target vocabulary size %d, got %d"
                             % (vocab, top_k))
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float))
                              or not 0.0 < top_p <= 1.0):  # NaN fails the comparison
        raise ValueError("top_p must be in (0, 1] or None, got %r" % (top_p,))
    _check_finite("temperature", check_number("temperature", temperature, above=0))
    rng = np.random.default_rng(seed)
    fns = _compiled(model)
    memory = fns["encode"](source)
    batch = int(source.shape[0])
    state = model.init_decode_state(memory, max_length)
    out = np.full((batch, max_length), pad_id, np.int32)
    done = np.zeros(batch, bool)
    tokens = tf.fill([batch], bos_id)
    for t in range(max_length):
        logits, state = fns["step"](tokens, memory, state, tf.constant(t, tf.int32))
        logits = _filter_logits(logits.numpy().astype(np.float64) / temperature, top_k, top_p)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        drawn = np.array([rng.choice(probs.shape[-1], p=p) for p in probs], np.int32)
        chosen, done = _finish(drawn, done, eos_id, pad_id)
        out[:, t] = chosen
        if done.all():
            break
        tokens = tf.constant(chosen)
    return out
