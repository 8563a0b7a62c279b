"""Capture every attention layer's weights while a model runs on a batch.

No model is cloned or rebuilt: for the duration of one eager forward pass, each attention
layer's `call` is wrapped by an instance attribute that asks the original `call` for its
weights, records them and hands the caller exactly what it asked for. Afterwards the
attribute is removed, so the layers are untouched. Works for:

- tf.keras.layers.MultiHeadAttention and any layer whose `call` takes
  `return_attention_scores` (attnlab MultiHeadAttention) or `return_weights` (attnlab
  GatedAttention, AdditiveAttention, LuongAttention): (B, H, T, S) or (B, T, S) weights;
- layers with a boolean `return_weights` attribute (attnlab CustomAttention);
- attention layers nested in blocks or sub-models: the innermost attention layers are
  recorded (a TransformerEncoderBlock's MultiHeadAttention, not the block itself).

Weights of shape (B, T, S) get a head axis: (B, 1, T, S). Names are layer paths
("block_0/multi_head_attention"); a layer called twice gets "#2" on its second record.

With `with_qk=True` the same pass also records the multi-head attention layers' queries
and keys (`attnlab.viz.query_key`), for the query/key anatomy (`attnlab.viz.anatomy`).
"""
import collections
import contextlib
import functools
import inspect

import numpy as np

from attnlab.validation import check_bool
from attnlab.viz.query_key import QueryKeySnapshot, recording_query_key
from attnlab.viz.snapshots import make_snapshot

_FLAGS = ("return_attention_scores", "return_weights")


def _children(layer):
    if hasattr(layer, "_flatten_layers"):  # Keras 2: direct sub-layers, in creation order
        return list(layer._flatten_layers(include_self=False, recursive=False))
    return list(getattr(layer, "layers", []))


def _attention_flag(layer):
    """The call argument (or "attribute") that makes `layer` return its weights, or None."""
    try:
        params = inspect.signature(layer.call).parameters
    except (TypeError, ValueError):
        return None
    # Imported here: this module does not import TensorFlow until a layer is inspected.
    from attnlab.ops.kernels import ATTENTION_IMPLS, FULL_KERNELS, resolve_attention_impl

    impl = getattr(layer, "attention_impl", "full")
    if impl in ATTENTION_IMPLS and resolve_attention_impl(impl) not in FULL_KERNELS:
        return None  # chunked / local kernels never materialize (T, S) weights
    for flag in _FLAGS:
        if flag in params:
            return flag
    if isinstance(getattr(layer, "return_weights", None), bool):
        return "attribute"
    return None


def attention_layers(model):
    """The innermost attention layers of `model` as an ordered dict path -> (layer, flag).

    Example:
        >>> list(attention_layers(model))
        ['encoder/multi_head_attention', 'decoder/multi_head_attention_1']
    """
    found = collections.OrderedDict()
    seen = set()

    def visit(layer, path):
        if id(layer) in seen:
            return False
        seen.add(id(layer))
        inner = False
        for child in _children(layer):
            inner = visit(child, path + [child.name]) or inner
        flag = _attention_flag(layer) if layer is not model else None
        if flag is not None and not inner:
            found["/".join(path)] = (layer, flag)
            return True
        return inner

    visit(model, [])
    return found


def _recording_call(layer, flag, original, record):
    signature = inspect.signature(original)

    @functools.wraps(original)
    def call(*args, **kwargs):
        if flag == "attribute":
            asked = layer.return_weights
            object.__setattr__(layer, "return_weights", True)
            try:
                result = original(*args, **kwargs)
            finally:
                object.__setattr__(layer, "return_weights", asked)
        else:
            bound = signature.bind(*args, **kwargs)
            asked = bool(bound.arguments.get(flag, False))
            bound.arguments[flag] = True
            result = original(*bound.args, **bound.kwargs)
        record(result[1])
        if asked:
            return result
        rest = (result[0],) + tuple(result[2:])
        return rest[0] if len(rest) == 1 else rest

    return call


@contextlib.contextmanager
def recording_attention(model, layers=None):
    """Context manager: while active, calls of `model` record attention weights.

    Args:
        model: the model or layer.
        layers: `attention_layers(model)` when already at hand (it inspects every layer).

    Yields:
        An OrderedDict name -> list of recorded weight tensors (one per call).

    Example:
        >>> with recording_attention(model) as records:
        ...     model(batch, training=False)
        >>> records["multi_head_attention"][0].shape
        TensorShape([2, 4, 16, 16])
    """
    records = collections.OrderedDict()
    patched = []
    try:
        layers = attention_layers(model) if layers is None else layers
        for path, (layer, flag) in layers.items():
            records[path] = []
            original = layer.call
            # object.__setattr__ bypasses Keras attribute tracking; removed in `finally`.
            object.__setattr__(layer, "call",
                               _recording_call(layer, flag, original, records[path].append))
            patched.append(layer)
        yield records
    finally:
        for layer in patched:
            object.__delattr__(layer, "call")


def _to_numpy(name, weights):
    if not hasattr(weights, "numpy") and not isinstance(weights, np.ndarray):
        raise RuntimeError("attention of layer %r was not computed eagerly (got %r); call the "
                           "model eagerly, not inside tf.function" % (name, weights))
    array = np.asarray(weights.numpy() if hasattr(weights, "numpy") else weights)
    array = array.astype(np.float32)
    if array.ndim == 3:
        array = array[:, np.newaxis]
    if array.ndim != 4:
        raise ValueError("layer %r returned attention weights of shape %s; expected (B, T, S) "
                         "or (B, H, T, S)" % (name, array.shape))
    return array


def _decode(ids, vocabulary, name):
    ids = np.asarray(ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError("%s: decoding with a vocabulary needs integer ids of shape (B, T), "
                         "got dtype %s shape %s" % (name, ids.dtype, ids.shape))
    rows = []
    for row in ids:
        tokens = []
        for i in row:
            try:
                tokens.append(str(vocabulary[int(i)]))
            except (IndexError, KeyError):
                raise ValueError("%s: token id %d is not in the vocabulary (%d entries)"
                                 % (name, int(i), len(vocabulary))) from None
        rows.append(tokens)
    return rows


def capture_attention(model, inputs, query_tokens=None, key_tokens=None, vocabulary=None,
                      training=False, with_qk=False):
    """Run `model` on a batch and return every attention layer's weights.

    Args:
        model: a Keras model or layer using attention layers (see the module docstring).
        inputs: what `model` is called with (array, list or dict).
        query_tokens, key_tokens: T (S) strings shared by the batch, or B lists of them.
        vocabulary: optional id -> token lookup (list or dict); with integer `inputs`
            (B, T) (or the first of several inputs) it supplies the tokens that are None.
        training: passed to the model call.
        with_qk: also record, in the same forward pass, the queries and keys of the
            attnlab and tf.keras MultiHeadAttention layers (before and after a rotary
            embedding), their scale, score bias and mask.

    Returns:
        AttentionSnapshot(step=None, epoch=None, weights, query_tokens, key_tokens):
        weights is an OrderedDict layer path -> (B, H, T, S) float32 array in call order.
        With `with_qk`, a QueryKeySnapshot: the same fields and `query_key`, an
        OrderedDict name -> QueryKeyRecord for the layers whose queries and keys were
        recorded (named as in `weights`).

    Raises:
        ValueError: the model has no attention layer that can return its weights, or
            none of them ran.

    Example:
        >>> captured = capture_attention(model, ids, vocabulary=vocab)
        >>> AttentionExplorer(captured)
        >>> QueryKeyAnatomy(capture_attention(model, ids, vocabulary=vocab, with_qk=True))
    """
    check_bool("with_qk", with_qk)
    if vocabulary is not None:
        first = inputs
        if isinstance(inputs, dict):
            first = next(iter(inputs.values()))
        elif isinstance(inputs, (list, tuple)):
            first = inputs[0]
        decoded = _decode(first, vocabulary, "capture_attention")
        query_tokens = decoded if query_tokens is None else query_tokens
        key_tokens = decoded if key_tokens is None else key_tokens
    layers = attention_layers(model)
    recording_qk = recording_query_key(model, layers) if with_qk else \
        contextlib.nullcontext({})
    with recording_qk as qk_records, recording_attention(model, layers) as records:
        if not records:
            raise ValueError("model %r has no attention layer that can return its weights "
                             "(tf.keras MultiHeadAttention or attnlab attention layers)"
                             % getattr(model, "name", model))
        model(inputs, training=training)
    weights = collections.OrderedDict()
    query_key = collections.OrderedDict()
    for path, calls in records.items():
        qk_calls = qk_records.get(path, [])
        for i, w in enumerate(calls):
            name = path if i == 0 else "%s#%d" % (path, i + 1)
            weights[name] = _to_numpy(name, w)
            # One record per call; kept when it explains exactly these weights' shape.
            if len(qk_calls) == len(calls) and qk_calls[i] is not None and \
                    qk_calls[i].scores_shape == weights[name].shape:
                query_key[name] = qk_calls[i]
    if not weights:
        raise ValueError("none of the attention layers %s ran in this call of the model"
                         % list(records))
    snapshot = make_snapshot(weights, query_tokens, key_tokens)
    return QueryKeySnapshot(*snapshot, query_key=query_key) if with_qk else snapshot
