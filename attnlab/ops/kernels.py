"""The attention kernels behind one interface, chosen by name.

A kernel computes softmax(q k^T, masked) v on (B, H, L, d) tensors whose queries are
already scaled:

    kernel(query, key, value, mask=None, causal=False, offset=None, bias=None)
        -> (B, H, T, dv)

`mask` is a bool mask broadcastable to (B, H, T, S) (True = may attend); `causal` hides
the keys after each query, key j being visible from query i when j <= i + offset
(default offset S - T: the last query sees the last key); `bias` is a floating tensor
added to the scores, broadcastable like the mask (`score_bias`), with a gradient. All of
them give the output of `scaled_dot_product_attention`, the plain reference; they differ in
speed and memory:

- "full": the (T, S) weights in memory, normalized by `tf.nn.softmax`, and a gradient of
  its own (`full.full_attention`);
- "full_exp": the same, normalized through exp and row sums: faster where TensorFlow's CPU
  softmax is its generic kernel, as in TF 2.9; score matrices of fewer than EXP_MIN_SCORES
  entries (a decoding step) take "full";
- "chunked" / "chunked_exp": exact attention in O(L * chunk) memory
  (`chunked.chunked_attention`), normalized either way;
- "local": each query sees the keys within `window` positions (`local.local_attention`);
  self-attention only.

"auto" is the one default: `default_attention_impl()` ("full_exp" or "full"), decided here.
"""
import functools

import numpy as np
import tensorflow as tf

from attnlab.ops.chunked import chunked_attention
from attnlab.ops.full import full_attention
from attnlab.ops.local import local_attention
from attnlab.validation import check_choice, check_positive_int

KERNELS = ("full", "full_exp", "chunked", "chunked_exp", "local")
ATTENTION_IMPLS = ("auto",) + KERNELS
# Smallest (T x S) score matrix "full_exp" normalizes through exp: below it the exp path's
# extra small ops cost more than the softmax passes they save (a decoding step, T = 1).
EXP_MIN_SCORES = 256 * 256
# Kernels whose (T, S) weights exist, so that a layer can return them or apply dropout
# through the reference with the same memory.
FULL_KERNELS = ("full", "full_exp")


def cpu_softmax_op():
    """The op TensorFlow runs for a CPU softmax after its graph rewrites: "Softmax" (its
    generic kernel) or oneDNN's "_MklSoftmax", read from the partition graph of a one-op
    session; None if it cannot tell."""
    graph = tf.Graph()
    with graph.as_default():
        scores = tf.compat.v1.placeholder(tf.float32, [1, 2])
        weights = tf.nn.softmax(scores)
    config = tf.compat.v1.ConfigProto(device_count={"GPU": 0}, inter_op_parallelism_threads=1,
                                      intra_op_parallelism_threads=1)
    metadata = tf.compat.v1.RunMetadata()
    try:
        with tf.compat.v1.Session(graph=graph, config=config) as session:
            session.run(weights, {scores: np.zeros([1, 2], np.float32)},
                        options=tf.compat.v1.RunOptions(output_partition_graphs=True),
                        run_metadata=metadata)
    except (tf.errors.OpError, RuntimeError, ValueError):
        return None
    ops = sorted({node.op for part in metadata.partition_graphs for node in part.node
                  if "Softmax" in node.op})
    return ops[0] if ops else None


@functools.lru_cache(maxsize=None)
def default_normalization():
    """How the "auto" kernel normalizes: "exp" where TensorFlow runs its generic CPU softmax
    kernel, else "softmax". Decided once per process.

    The generic kernel ("Softmax") is slower than one exp pass and a row sum
    (benchmarks/RESULTS.md). TF 2.9 always runs it on a CPU; later versions replace it by
    oneDNN's fused softmax only on CPUs whose features turn oneDNN on (AVX-512 and newer),
    so this asks TensorFlow (`cpu_softmax_op`) rather than reading its version. With a GPU
    (fused softmax kernels) or when TensorFlow cannot tell: "softmax".
    """
    if tf.config.list_physical_devices("GPU"):
        return "softmax"
    return "exp" if cpu_softmax_op() == "Softmax" else "softmax"


def default_attention_impl():
    """The kernel "auto" stands for: "full_exp" or "full", by `default_normalization()`."""
    return "full_exp" if default_normalization() == "exp" else "full"


def check_attention_impl(attention_impl, window=None):
    """Raise ValueError unless `attention_impl` names a kernel (or "auto") that its options
    allow; returns it."""
    check_choice("attention_impl", attention_impl, ATTENTION_IMPLS)
    if attention_impl == "local" and window is None:
        raise ValueError("attention_impl='local' needs a window (a positive integer), "
                         "got window=None")
    return attention_impl


def resolve_attention_impl(attention_impl):
    """The kernel name `attention_impl` stands for ("auto" resolved)."""
    check_attention_impl(attention_impl, window=0)
    return default_attention_impl() if attention_impl == "auto" else attention_impl


def attention_kernel(attention_impl="auto", window=None, chunk_size=None):
    """The kernel `attention_impl` as a function of the interface above.

    Args:
        attention_impl: one of ATTENTION_IMPLS.
        window: how far a query sees on each side, for "local" (required there).
        chunk_size: query and key chunk size of "chunked"/"chunked_exp" (default:
            `chunked_attention`'s).

    Example:
        >>> attend = attention_kernel("chunked", chunk_size=128)
        >>> q = tf.random.normal([1, 2, 300, 8])
        >>> attend(q, q, q, causal=True).shape
        TensorShape([1, 2, 300, 8])
    """
    check_attention_impl(attention_impl, window)
    name = resolve_attention_impl(attention_impl)
    if name in FULL_KERNELS:
        return functools.partial(_full, normalization=_normalization(name))
    if name == "local":
        return functools.partial(_local, window=check_positive_int("window", window))
    sizes = {}
    if chunk_size is not None:
        chunk_size = check_positive_int("chunk_size", chunk_size)
        sizes = dict(query_chunk_size=chunk_size, key_chunk_size=chunk_size)
    return functools.partial(_chunked, normalization=_normalization(name), **sizes)


def _normalization(name):
    return "exp" if name.endswith("_exp") else "softmax"


def _full(query, key, value, mask=None, causal=False, offset=None, bias=None,
          normalization="softmax"):
    lengths = (query.shape[-2], key.shape[-2])
    if None not in lengths and lengths[0] * lengths[1] < EXP_MIN_SCORES:
        normalization = "softmax"
    return full_attention(query, key, value, mask=mask, causal=causal, scale=1.0,
                          causal_offset=offset, normalization=normalization, bias=bias)


def _chunked(query, key, value, mask=None, causal=False, offset=None, bias=None,
             normalization="softmax", **sizes):
    return chunked_attention(query, key, value, mask=mask, causal=causal, scale=1.0,
                             causal_offset=offset, normalization=normalization, bias=bias,
                             **sizes)


def _local(query, key, value, mask=None, causal=False, offset=None, bias=None, window=None):
    # One sequence attending to itself: the causal band is aligned at 0 (= S - T).
    static_offset = 0 if offset is None else tf.get_static_value(offset)
    if static_offset is None:
        check = tf.debugging.assert_equal(offset, 0, message="the 'local' kernel takes a "
                                          "causal offset of 0 only")
        with tf.control_dependencies([check] if check is not None else []):
            query = tf.identity(query)
    elif static_offset != 0:
        raise ValueError("the 'local' kernel is self-attention over one sequence: its causal "
                         "offset is 0, got offset=%r" % (static_offset,))
    return local_attention(query, key, value, window, causal=causal, mask=mask, scale=1.0,
                           bias=bias)
