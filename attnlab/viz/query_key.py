"""The queries and keys behind attention weights, recorded in the forward pass that made them.

`capture_attention(model, inputs, with_qk=True)` enters `recording_query_key(model)`, which
for one eager call of the model lets each multi-head attention layer hand over its
projected queries and keys (per head), the scale, the additive score bias and the mask:

- attnlab MultiHeadAttention (and subclasses that keep its `_compute_attention`): through
  the layer's `query_key_recorder` hook (see the layer's docstring), set on the instance
  for the pass and reset afterwards. With a rotary embedding, the queries and keys are
  recorded before and after the rotation; `attention_bias` (e.g. a RelativePositionBias
  output, or AdaptiveSpanAttention's span term) is recorded apart from q.k.
- tf.keras.layers.MultiHeadAttention (not subclasses that replace `_compute_attention`):
  its `_compute_attention(query, key, value, attention_mask, training)` receives the
  projected queries and keys; an instance attribute wraps it for the pass, as
  `attnlab.viz.capture` wraps `call`.

Each record satisfies weights == softmax(scale * q_rot . k_rot + bias) over the keys its
mask shows (`QueryKeyRecord.softmax`), with one exception: a query whose keys are all hidden
gets zero weights from attnlab's layer and from `softmax()`, but uniform weights from
tf.keras's layer (it adds a large negative number instead of hiding keys), e.g. padding
queries. Layers with (B, T, D) inputs and a full attention kernel are recorded; the others
have no record.
"""
import collections
import contextlib
import functools
import inspect
import math

import numpy as np

from attnlab.viz.snapshots import AttentionSnapshot

_RECORD_FIELDS = ("query", "key", "query_rotated", "key_rotated", "scale", "bias", "mask")


class QueryKeyRecord(collections.namedtuple("QueryKeyRecord", _RECORD_FIELDS)):
    """One call of one attention layer: NumPy arrays, heads first, in the dtype the layer
    computed them in (float32; float16 under mixed precision; copied only where needed,
    which keeps the capture cheap). The methods compute in float64.

    query: (B, H, T, dk) projected queries, before any rotation and not yet scaled.
    key: (B, H, S, dk) projected keys, before any rotation.
    query_rotated, key_rotated: the same after the layer's rotary embedding, or None when
        the layer rotates nothing.
    scale: the float multiplying q . k (1/sqrt(dk)).
    bias: the additive score bias, broadcastable to (B, H, T, S), or None.
    mask: bool, broadcastable to (B, H, T, S) (True = may attend), or None.

    Example:
        >>> record = captured.query_key["encoder/self_attention"]
        >>> np.allclose(record.softmax(), captured.weights["encoder/self_attention"])
        True
    """

    __slots__ = ()

    @property
    def rotated(self):
        """Whether the layer rotated its queries and keys (rotary embedding)."""
        return self.query_rotated is not None

    def dotted(self):
        """(queries, keys) that are multiplied: the rotated ones when the layer rotates."""
        if self.rotated:
            return self.query_rotated, self.key_rotated
        return self.query, self.key

    @property
    def scores_shape(self):
        batch, heads, t, _ = self.query.shape
        return (batch, heads, t, self.key.shape[2])

    def logits(self):
        """(B, H, T, S) float64 scale * q . k + bias, before the mask."""
        q, k = (np.asarray(x, np.float64) for x in self.dotted())
        logits = self.scale * np.einsum("bhtd,bhsd->bhts", q, k)
        if self.bias is not None:
            logits = logits + self.bias
        return logits

    def visible(self):
        """(B, H, T, S) bool: the keys each query may attend."""
        if self.mask is None:
            return np.ones(self.scores_shape, bool)
        return np.broadcast_to(self.mask, self.scores_shape)

    def softmax(self):
        """(B, H, T, S) float64 weights: softmax of the logits over the visible keys; a
        query with no visible key gets zeros (attnlab's convention)."""
        return masked_softmax(self.logits(), self.visible())


def masked_softmax(logits, visible):
    """float64 softmax over the last axis where `visible`; rows with nothing visible are 0."""
    logits = np.where(visible, np.asarray(logits, np.float64), -np.inf)
    top = logits.max(axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    exp = np.where(visible, np.exp(logits - top), 0.0)
    total = exp.sum(axis=-1, keepdims=True)
    return np.divide(exp, total, out=np.zeros_like(exp), where=total > 0)


class QueryKeySnapshot(AttentionSnapshot):
    """An AttentionSnapshot (it goes wherever one does, e.g. AttentionExplorer) that also
    holds `query_key`: an OrderedDict layer name -> QueryKeyRecord, named as `weights`,
    for the layers whose queries and keys were recorded."""

    def __new__(cls, step, epoch, weights, query_tokens, key_tokens, query_key):
        snapshot = super().__new__(cls, step, epoch, weights, query_tokens, key_tokens)
        snapshot.query_key = query_key
        return snapshot

    def __getnewargs__(self):
        return tuple(self) + (self.query_key,)

    def _replace(self, **changes):
        query_key = changes.pop("query_key", self.query_key)
        fields = AttentionSnapshot(*self)._replace(**changes)
        return QueryKeySnapshot(*fields, query_key=query_key)


# --------------------------------------------------------------------------- recording
def _numpy(x, what):
    if x is None:
        return None
    if isinstance(x, (np.ndarray, np.generic, list, tuple, bool, int, float)):
        return np.asarray(x)  # e.g. a NumPy mask the model passed as it is
    if not hasattr(x, "numpy"):
        raise RuntimeError("%s was not computed eagerly (got %r); call the model eagerly, not "
                           "inside tf.function" % (what, x))
    return x.numpy()


def _attnlab_recorder(layer, path, append, previous):
    """The `query_key_recorder` of an attnlab MultiHeadAttention."""

    def record(scaled_query, key, scale, bias, mask, scaled_query_unrotated, key_unrotated):
        if previous is not None:  # a recorder the user had set keeps receiving calls
            previous(scaled_query=scaled_query, key=key, scale=scale, bias=bias, mask=mask,
                     scaled_query_unrotated=scaled_query_unrotated,
                     key_unrotated=key_unrotated)
        if not layer._layout.is_sequence:
            append(None)  # (B, ..., D) inputs: no (B, H, T, S) weights to explain
            return
        what = "the queries and keys of layer %r" % path
        query, key = _numpy(scaled_query, what) / scale, _numpy(key, what)
        rotated = scaled_query_unrotated is not None
        if rotated:
            query_rotated, key_rotated = query, key
            query = _numpy(scaled_query_unrotated, what) / scale
            key = _numpy(key_unrotated, what)
        else:
            query_rotated = key_rotated = None
        mask = None if mask is None else np.asarray(_numpy(mask, what), bool)
        append(QueryKeyRecord(query, key, query_rotated, key_rotated, float(scale),
                              _numpy(bias, what), mask))

    return record


def _keras_compute_attention(layer, path, original, append):
    """A wrapper of a tf.keras MultiHeadAttention's `_compute_attention` that records."""
    signature = inspect.signature(original)

    @functools.wraps(original)
    def compute_attention(*args, **kwargs):
        result = original(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)
        query, key = bound.arguments["query"], bound.arguments["key"]
        if query.shape.rank != 4:  # several attention axes: no (B, H, T, S) weights
            append(None)
            return result
        what = "the queries and keys of layer %r" % path
        # Keras layout (B, T, H, dk) -> heads first; Keras scales the queries by this.
        query = np.transpose(_numpy(query, what), (0, 2, 1, 3))
        key = np.transpose(_numpy(key, what), (0, 2, 1, 3))
        mask = bound.arguments.get("attention_mask")
        if mask is not None:
            mask = _numpy(mask, what) != 0
            while mask.ndim < 4:  # Keras adds the head axis in front of (T, S)
                mask = np.expand_dims(mask, -3)
        append(QueryKeyRecord(query, key, None, None, 1.0 / math.sqrt(float(layer._key_dim)),
                              None, mask))
        return result

    return compute_attention


def query_key_hook(layer):
    """How `layer`'s queries and keys can be recorded: "recorder" (attnlab
    MultiHeadAttention), "compute_attention" (tf.keras MultiHeadAttention) or None."""
    import tensorflow as tf

    from attnlab.layers.multi_head_attention import MultiHeadAttention

    if isinstance(layer, MultiHeadAttention):
        own = type(layer)._compute_attention is MultiHeadAttention._compute_attention
        return "recorder" if own else None
    keras = tf.keras.layers.MultiHeadAttention
    if isinstance(layer, keras) and type(layer)._compute_attention is keras._compute_attention:
        return "compute_attention"
    return None


@contextlib.contextmanager
def recording_query_key(model, layers=None):
    """Context manager: while active, calls of `model` record their layers' queries and keys.

    Args:
        model: the model or layer.
        layers: `attnlab.viz.capture.attention_layers(model)` when already at hand.

    Yields:
        An OrderedDict layer path (as `attention_layers` names it) -> list with, per call of
        the layer, a QueryKeyRecord (or None when that call had no (B, H, T, S) weights).

    Example:
        >>> with recording_query_key(model) as records:
        ...     model(batch, training=False)
        >>> records["encoder/self_attention"][0].query.shape
        (2, 4, 16, 8)
    """
    if layers is None:
        from attnlab.viz.capture import attention_layers

        layers = attention_layers(model)
    records = collections.OrderedDict()
    restore = []
    try:
        for path, (layer, _) in layers.items():
            hook = query_key_hook(layer)
            if hook is None:
                continue
            records[path] = []
            append = records[path].append
            # object.__setattr__ bypasses Keras attribute tracking; undone in `finally`.
            if hook == "recorder":
                previous = layer.query_key_recorder
                object.__setattr__(layer, "query_key_recorder",
                                   _attnlab_recorder(layer, path, append, previous))
                restore.append((layer, "query_key_recorder", previous))
            else:
                own = vars(layer).get("_compute_attention")  # an instance attribute, if any
                object.__setattr__(layer, "_compute_attention", _keras_compute_attention(
                    layer, path, layer._compute_attention, append))
                restore.append((layer, "_compute_attention", own))
        yield records
    finally:
        for layer, name, previous in reversed(restore):
            if name == "_compute_attention" and previous is None:
                object.__delattr__(layer, name)
            else:
                object.__setattr__(layer, name, previous)
